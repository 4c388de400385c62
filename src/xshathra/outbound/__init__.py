"""Requests the server makes on a tenant's behalf to URLs the tenant chose (webhooks, backend
proxies): the private-address guard and the request signature, shared by both."""
