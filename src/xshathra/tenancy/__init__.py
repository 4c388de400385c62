"""Tenancy: applications (tenants), their keys and the tokens minted for them."""
