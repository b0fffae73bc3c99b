"""The S3 choices ``backup`` offers: one definition for the CLI's choices and the library's checks. Pure (no boto3),
so the command-line parser can import it without loading the AWS SDK."""

from __future__ import annotations

__all__ = ["STORAGE_CLASSES", "SSE_MODES"]

STORAGE_CLASSES = ("STANDARD", "INTELLIGENT_TIERING", "STANDARD_IA", "GLACIER_IR")  # readable without a restore
SSE_MODES = ("AES256", "aws:kms")  # S3-managed keys, or KMS keys
