from lynx.telemetry.tracing import EXPORT_BATCH_SPANS, export_batch_size, otlp_export_enabled


def test_nothing_is_exported_without_an_endpoint():
    assert not otlp_export_enabled({})


def test_an_endpoint_enables_export_unless_traces_are_switched_off():
    assert otlp_export_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert otlp_export_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not otlp_export_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"})


def test_spans_leave_in_small_batches_unless_the_standard_variable_says_otherwise():
    assert export_batch_size({}) == EXPORT_BATCH_SPANS < 512  # the SDK's default
    assert export_batch_size({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "256"}) is None  # the SDK reads it
