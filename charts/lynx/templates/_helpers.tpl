{{/* Chart name, cut to 63 characters. */}}
{{- define "lynx.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name, cut to 63 characters. */}}
{{- define "lynx.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A component's object name: <fullname>-<component>, cut to 63 characters. Call with (dict "root" $ "name" "gateway"). */}}
{{- define "lynx.componentName" -}}
{{- printf "%s-%s" (include "lynx.fullname" .root | trunc (int (sub 62 (len .name)))) .name | trimSuffix "-" }}
{{- end }}

{{/* The decoder's headless Service: one DNS record per ready decoder pod. */}}
{{- define "lynx.decoderInstances" -}}
{{- printf "%s-instances" (include "lynx.componentName" (dict "root" . "name" "decoder")) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lynx.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select a component's pods. Call with (dict "root" $ "name" "gateway"). */}}
{{- define "lynx.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lynx.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* Labels on every object. Call with (dict "root" $ "name" "gateway"); name may be "". */}}
{{- define "lynx.labels" -}}
helm.sh/chart: {{ include "lynx.chart" .root }}
app.kubernetes.io/name: {{ include "lynx.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: lynx
{{- with .name }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A component's image: its own `image` if set (skaffold sets it), else <registry>/<repository>-<component>:<tag or appVersion>. */}}
{{- define "lynx.image" -}}
{{- $image := .root.Values.image }}
{{- $own := (index .root.Values.components .name | default dict).image }}
{{- if $own }}
{{- $own }}
{{- else }}
{{- $repository := printf "%s-%s" $image.repository .name }}
{{- if $image.registry }}{{ $repository = printf "%s/%s" $image.registry $repository }}{{ end }}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* Where the services send OTLP/HTTP: the chart's collector when it is deployed, else the trace backend. */}}
{{- define "lynx.otlpEndpoint" -}}
{{- if include "lynx.collectorEnabled" . }}
{{- printf "http://%s:4318" (include "lynx.componentName" (dict "root" . "name" "collector")) }}
{{- else }}
{{- include "lynx.tracesBackendEndpoint" . }}
{{- end }}
{{- end }}

{{/* The trace backend's OTLP/HTTP endpoint (the collector exports there): the value, or the chart's own trace store. */}}
{{- define "lynx.tracesBackendEndpoint" -}}
{{- if .Values.otlp.endpoint }}
{{- .Values.otlp.endpoint }}
{{- else if .Values.jaeger.enabled }}
{{- printf "http://%s:4318" (include "lynx.componentName" (dict "root" . "name" "jaeger")) }}
{{- else if .Values.tempo.enabled }}
{{- printf "http://%s:4318" (include "lynx.tempoHost" .) }}
{{- end }}
{{- end }}

{{/* "true" when the collector is deployed: enabled, and a trace backend to export to. */}}
{{- define "lynx.collectorEnabled" -}}
{{- if and .Values.collector.enabled (include "lynx.tracesBackendEndpoint" .) }}true{{ end }}
{{- end }}

{{/* The Tempo chart's Service name (mirrors its own fullname rule). */}}
{{- define "lynx.tempoHost" -}}
{{- if .Values.tempo.fullnameOverride }}
{{- .Values.tempo.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains "tempo" .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-tempo" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The trace store's query URL, for the auditor and Grafana: components.auditor.traceStoreUrl, else the chart's Jaeger
(its query API on 16686), else the opt-in Tempo subchart (3200); empty when there is none.
*/}}
{{- define "lynx.traceStoreUrl" -}}
{{- if .Values.components.auditor.traceStoreUrl }}
{{- .Values.components.auditor.traceStoreUrl }}
{{- else if .Values.jaeger.enabled }}
{{- printf "http://%s:16686" (include "lynx.componentName" (dict "root" . "name" "jaeger")) }}
{{- else if .Values.tempo.enabled }}
{{- printf "http://%s:3200" (include "lynx.tempoHost" .) }}
{{- end }}
{{- end }}

{{/* What that trace store is, `jaeger` or `tempo`: components.auditor.traceStoreKind, else the chart's own store's. */}}
{{- define "lynx.traceStoreKind" -}}
{{- if .Values.components.auditor.traceStoreKind }}
{{- .Values.components.auditor.traceStoreKind }}
{{- else if and .Values.tempo.enabled (not .Values.jaeger.enabled) (not .Values.components.auditor.traceStoreUrl) }}
{{- "tempo" }}
{{- else }}
{{- "jaeger" }}
{{- end }}
{{- end }}

{{/* Labels the kube-prometheus-stack Prometheus selects ServiceMonitors and rules by. */}}
{{- define "lynx.monitoringLabels" -}}
release: {{ .Release.Name }}
{{- with .Values.monitoring.extraSelectorLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Secret holding the tenants file. */}}
{{- define "lynx.tenantsSecret" -}}
{{- default (printf "%s-tenants" (include "lynx.fullname" .)) .Values.tenants.existingSecret }}
{{- end }}

{{/* "true" when a component is deployed: enabled, and for the auditor, a trace store to read. Call with (dict "root" $ "name" "auditor"). */}}
{{- define "lynx.componentEnabled" -}}
{{- $component := index .root.Values.components .name }}
{{- if and $component.enabled (or (ne .name "auditor") (include "lynx.traceStoreUrl" .root)) }}true{{ end }}
{{- end }}

{{/* The Secret holding the helm test's API key. */}}
{{- define "lynx.helmTestSecret" -}}
{{- printf "%s-helm-test" (include "lynx.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The helm test's API key: helmTest.apiKey if given, else the key this release's Secret already holds
(so `helm upgrade` keeps it), else a new random one. The first call of a render stores it in
.Release, so every template of that render (and the gateway's checksum of tenants.yaml) sees the same key.
*/}}
{{- define "lynx.helmTestKey" -}}
{{- if not (hasKey .Release "lynxHelmTestKey") }}
{{- $key := .Values.helmTest.apiKey }}
{{- if not $key }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "lynx.helmTestSecret" .) }}
{{- $key = index ($existing.data | default dict) "api-key" | default "" | b64dec }}
{{- end }}
{{- $_ := set .Release "lynxHelmTestKey" (default (printf "lynx-%s" (randAlphaNum 32)) $key) }}
{{- end }}
{{- get .Release "lynxHelmTestKey" }}
{{- end }}
