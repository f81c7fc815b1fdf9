# The publish pipeline's explicit bake (`make docker-bake`): the serving image plus the champion
# exported at build time, so a published image answers /predict with no registry at all. At
# start the registry's champion still wins when MLFLOW_TRACKING_URI answers; the baked one is
# served only when the registry does not answer, and /model then says `"source": "baked"`.
# The build context is the exported folder (current.json and the model's files), nothing else.
ARG SERVE_IMAGE=xgbops/xgbops-serve:latest
FROM ${SERVE_IMAGE}
COPY . /opt/xgbops/baked/
ENV XGBOPS_BAKED_MODEL=/opt/xgbops/baked
