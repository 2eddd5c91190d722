"""The budget controller's web console (issue 24): an admin's overview, tenant and trace pages with the CLI's quick
actions, and a tenant owner's view of its own budget. Mounted under ``/console`` by both controllers' apps
(``local.create_app``, ``lease_server.lease_app``) as one router (``routes.console_router``)."""
