"""The Centrifuge client protocol v2 wire format, sans I/O: messages, codecs and codes.

Nothing here does I/O or imports other parts of Xshathra.
"""
