#!/usr/bin/env bash
# Creates the databases of the platform, each owned by a login role of the same name:
#   mlflow  the MLflow tracking server's backend store   password MLFLOW_DB_PASSWORD
#   xgbops  the API's prediction history                 password HISTORY_DB_PASSWORD
#   optuna  the studies of `xgbops tune`, owned by the xgbops role (Optuna keeps its own
#           alembic_version table, so it cannot share a database with MLflow or the history)
#
# The postgres image runs the scripts of /docker-entrypoint-initdb.d once, on an empty data
# volume (`docker compose down -v` to run it again). Passwords are handed to psql as variables
# and quoted by psql itself (:'name'), never pasted into the SQL text. The names can be changed
# (MLFLOW_DB_NAME, HISTORY_DB_NAME, TUNE_DB_NAME), which the tests do to run this script on a shared server.
set -euo pipefail

: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set (see .env.example)}"
: "${HISTORY_DB_PASSWORD:?HISTORY_DB_PASSWORD must be set (see .env.example)}"

psql --no-psqlrc --set ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    --set mlflow_db="${MLFLOW_DB_NAME:-mlflow}" --set mlflow_password="${MLFLOW_DB_PASSWORD}" \
    --set history_db="${HISTORY_DB_NAME:-xgbops}" --set history_password="${HISTORY_DB_PASSWORD}" \
    --set tune_db="${TUNE_DB_NAME:-optuna}" \
    <<'SQL'
CREATE ROLE :"mlflow_db" LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE :"mlflow_db" OWNER :"mlflow_db";
CREATE ROLE :"history_db" LOGIN PASSWORD :'history_password';
CREATE DATABASE :"history_db" OWNER :"history_db";
CREATE DATABASE :"tune_db" OWNER :"history_db";
SQL
