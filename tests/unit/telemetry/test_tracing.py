from opentelemetry.sdk.trace import TracerProvider, sampling

from lynx.telemetry.tracing import (
    EXPORT_BATCH_SPANS, SamplerSetting, export_batch_size, otlp_export_enabled, sampler_setting, sdk_disabled,
)


def test_nothing_is_exported_without_an_endpoint():
    assert not otlp_export_enabled({})


def test_an_endpoint_enables_export_unless_traces_are_switched_off():
    assert otlp_export_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert otlp_export_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not otlp_export_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"})


def test_spans_leave_in_small_batches_unless_the_standard_variable_says_otherwise():
    assert export_batch_size({}) == EXPORT_BATCH_SPANS < 512  # the SDK's default
    assert export_batch_size({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "256"}) is None  # the SDK reads it


def test_the_sampler_setting_is_read_from_the_sampler_the_sdk_built():
    assert sampler_setting(sampling.DEFAULT_ON) == SamplerSetting("parentbased_always_on", 1.0)
    assert sampler_setting(sampling.DEFAULT_OFF) == SamplerSetting("parentbased_always_off", 0.0)
    assert sampler_setting(sampling.ALWAYS_ON) == SamplerSetting("always_on", 1.0)
    assert sampler_setting(sampling.ALWAYS_OFF) == SamplerSetting("always_off", 0.0)
    assert sampler_setting(sampling.TraceIdRatioBased(0.5)) == SamplerSetting("traceidratio", 0.5)
    assert sampler_setting(sampling.ParentBasedTraceIdRatio(0.25)) == SamplerSetting("parentbased_traceidratio", 0.25)
    assert sampler_setting(sampling.DEFAULT_ON, disabled=True) == SamplerSetting("disabled", 0.0)


def test_the_standard_variables_reach_the_setting_through_the_sdk(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert sampler_setting(TracerProvider().sampler) == SamplerSetting("parentbased_traceidratio", 0.25)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "a quarter")  # the SDK falls back to 1.0: so does the dashboard
    assert sampler_setting(TracerProvider().sampler) == SamplerSetting("parentbased_traceidratio", 1.0)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER")
    assert sampler_setting(TracerProvider().sampler) == SamplerSetting("parentbased_always_on", 1.0)


def test_a_disabled_sdk_traces_nothing():
    assert sdk_disabled({"OTEL_SDK_DISABLED": " True "}) and not sdk_disabled({}) and not sdk_disabled(
        {"OTEL_SDK_DISABLED": "false"})
