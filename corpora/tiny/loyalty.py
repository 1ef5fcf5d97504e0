"""Loyalty card rules for Kettle & Crane."""

STAMPS_FOR_FREE_DRINK = 9


def free_drinks(stamps: int) -> int:
    """Every ninth stamp earns one free drink of any size."""
    return stamps // STAMPS_FOR_FREE_DRINK


def expires_after_days() -> int:
    """Loyalty cards expire 365 days after the last stamp."""
    return 365
