"""Rotate third-party API keys stored in Vault.

Run weekly from the ops scheduler; rotates any key older than the maximum
age from the secrets-management policy.
"""

import datetime

MAX_KEY_AGE_DAYS = 90
VAULT_MOUNT = "secret/third-party"


def needs_rotation(created: datetime.date, today: datetime.date) -> bool:
    """A key is rotated once it is older than MAX_KEY_AGE_DAYS."""
    return (today - created).days > MAX_KEY_AGE_DAYS


def rotate(client, name: str) -> None:
    """Create a new key at the provider, store it in Vault, revoke the old one."""
    new_key = client.provider(name).create_key()
    client.vault.write(f"{VAULT_MOUNT}/{name}", key=new_key)
    client.provider(name).revoke_previous()
