"""MLflow "models from code" entry point for the xgbops pyfunc.

MLflow copies this file into every logged model and runs it when the model is loaded (for
example by ``mlflow models serve``), so the model is defined by code, not by a pickle.
"""

from mlflow.models import set_model

from xgbops.tracking import XgbopsPyfunc

set_model(XgbopsPyfunc())
