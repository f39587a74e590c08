{{/* The objects' name: the release name, or "<release>-poet" when it does not say poet. */}}
{{- define "poet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "poet.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "poet.labels" -}}
{{ include "poet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
One probe from its values: grpc asks the gRPC health service on 50051 (the kubelet's
gRPC probe takes a port number, not a name, and speaks plaintext only) for "service";
http GETs "path" on the gateway, over HTTPS with scheme: HTTPS (POET_TLS_CERT set).
*/}}
{{- define "poet.probe" -}}
{{- if eq .probe.type "grpc" -}}
grpc:
  port: 50051
  service: {{ .service | quote }}
{{- else -}}
httpGet:
  path: {{ .path }}
  port: http
  {{- with .probe.scheme }}
  scheme: {{ . }}
  {{- end }}
{{- end }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end -}}
