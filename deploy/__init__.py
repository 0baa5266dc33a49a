"""Serverless deployment: Lambda handlers, the local API Gateway emulator, the SAM template."""
