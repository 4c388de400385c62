"""Webhooks: registrations and their durable, signed delivery."""
