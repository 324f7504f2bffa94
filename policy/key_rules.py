"""Rules on the encryption keys of every cloud: one rule per concern, each cloud's key type read its own way."""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs, Severity

from .aws_resources import KMS_KEY
from .props import CRYPTO_KEY, UNKNOWN, as_number, describe_seconds
from .rule import ADVISORY, resource_rule

DAY = 86400
MAX_ROTATION_DAYS = 90
# AWS KMS rotates a key with rotation on but no period every 365 days.
AWS_DEFAULT_ROTATION_DAYS = 365


def _check_cloud_kms(props: dict, args: ResourceValidationArgs, report: ReportViolation, maximum: float) -> None:
    raw = props.get("rotationPeriod")
    if raw is UNKNOWN:
        return
    seconds = as_number(raw)
    if seconds is None:
        report(
            f"CryptoKey '{args.name}': no rotationPeriod; the key material never rotates. Fix: set "
            f"rotationPeriod to at most '{int(maximum * DAY)}s' ({maximum:g} days)."
        )
    elif seconds > maximum * DAY:
        report(
            f"CryptoKey '{args.name}': rotationPeriod is {describe_seconds(seconds)}, longer than {maximum:g} "
            f"days. Fix: set rotationPeriod to at most '{int(maximum * DAY)}s'."
        )


def _check_aws_kms(props: dict, args: ResourceValidationArgs, report: ReportViolation, maximum: float) -> None:
    enabled = props.get("enableKeyRotation")
    if enabled is UNKNOWN:
        return
    if enabled is not True:
        report(
            f"KMS key '{args.name}': enableKeyRotation is {enabled}; the key material never rotates. Fix: set "
            f"enable_key_rotation=True and rotation_period_in_days to at most {maximum:g}."
        )
        return
    raw = props.get("rotationPeriodInDays")
    days = AWS_DEFAULT_ROTATION_DAYS if raw is None else as_number(raw)
    if days is not None and days > maximum:
        shown = f"unset (AWS rotates every {AWS_DEFAULT_ROTATION_DAYS} days)" if raw is None else f"{days:g} days"
        report(
            f"KMS key '{args.name}': rotationPeriodInDays is {shown}, longer than {maximum:g} days. Fix: set "
            f"rotation_period_in_days to at most {maximum:g} (AWS allows 90 to 2560)."
        )


_ROTATION_CHECKS = {CRYPTO_KEY: _check_cloud_kms, KMS_KEY: _check_aws_kms}


def _check_rotation(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    maximum = float(args.get_config().get("maxRotationDays", MAX_ROTATION_DAYS))
    _ROTATION_CHECKS[args.resource_type](props, args, report, maximum)


kms_key_rotation = resource_rule(
    "kms-key-rotation",
    "KMS keys (Cloud KMS, AWS KMS) rotate at least every 90 days.",
    types=_ROTATION_CHECKS,
    check=_check_rotation,
    level=ADVISORY,
    severity=Severity.MEDIUM,
    remediation="Cloud KMS: set rotationPeriod to '7776000s' (90 days) or less. AWS KMS: set enableKeyRotation and "
    "rotationPeriodInDays to 90.",
    config={
        "maxRotationDays": {
            "type": "number",
            "minimum": 1,
            "default": MAX_ROTATION_DAYS,
            "description": "Longest allowed rotation period, in days.",
        }
    },
)

POLICIES = [kms_key_rotation]
