"""The seed apps API (seed 000): tokens, broadcast, applications, analytics and webhooks under
`/api`. Its routes call the application service (`tenancy.service`) and the executor."""

PREFIX = "/api"
