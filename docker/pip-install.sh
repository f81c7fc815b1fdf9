#!/bin/sh
# pip install in the image build, through the builder's own index configuration when it passed
# one as a BuildKit secret (`--secret id=pip_conf,src=...`, `--secret id=pip_ca,src=...`): the
# secrets are mounted for that one RUN and never stay in a layer. Without them, pip's defaults.
set -eu
if [ -s /run/secrets/pip_conf ]; then
    PIP_CONFIG_FILE=/run/secrets/pip_conf
    export PIP_CONFIG_FILE
fi
if [ -s /run/secrets/pip_ca ]; then
    PIP_CERT=/run/secrets/pip_ca
    export PIP_CERT
fi
exec /opt/venv/bin/pip install --quiet "$@"
