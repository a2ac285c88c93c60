"""falflow: fal.ai generative-model jobs from S3 drops and SQS messages, on AWS serverless."""

# The one place the version is kept (pyproject reads it): the Lambda layer ships the package
# without its dist-info, so importlib.metadata cannot be asked there.
__version__ = "0.1.0"
