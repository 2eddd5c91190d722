from lynx.telemetry.tracing import otlp_export_enabled


def test_nothing_is_exported_without_an_endpoint():
    assert not otlp_export_enabled({})


def test_an_endpoint_enables_export_unless_traces_are_switched_off():
    assert otlp_export_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert otlp_export_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not otlp_export_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"})
