"""boto3 layer: one module per AWS operation. Only this package imports boto3."""
