"""Dashboard accounts: who may sign in, their sessions and invitations.

`models` says what an account, a session and an invitation are and declares `AccountStore`,
the storage contract; `service` holds every rule (sign-up policy, passwords, throttling,
session lifetime). Storage implements the contract in `storage/accounts.py`.
"""
