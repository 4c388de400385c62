"""Plumbing shared by every backend on a Redis or NATS server (brokers, presence, rate-limit
counters): client setup, the one mapping from a `ChannelRef` to key and subject names, and the
packing of client infos. Imports only `xshathra.model`, so backends share it without importing
each other.
"""
