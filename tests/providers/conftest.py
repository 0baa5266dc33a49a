from tests.fakes.fixtures import (  # noqa: F401
    anthropic_fake,
    aws_test_env,
    bedrock_fake,
    openai_fake,
)
