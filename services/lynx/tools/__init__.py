"""What runs beside the services, never inside them: chaos, load, quality (CpQU), the dashboards' builder and the model
build. Services never import these."""
