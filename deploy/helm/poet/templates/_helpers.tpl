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

{{/* postgresql mode: several replicas on one shared database, no volume. */}}
{{- define "poet.postgresql" -}}
{{- if eq .Values.database.mode "postgresql" }}true{{ end -}}
{{- end -}}

{{/* Whether the HorizontalPodAutoscaler is rendered: autoscaling.enabled, by default on in postgresql mode. */}}
{{- define "poet.autoscaling" -}}
{{- $enabled := .Values.autoscaling.enabled -}}
{{- if kindIs "invalid" $enabled }}{{ $enabled = (include "poet.postgresql" .) }}{{ end -}}
{{- if $enabled }}true{{ end -}}
{{- end -}}

{{/* The replicas of the Deployment when no autoscaler owns them: replicaCount, by default 3. */}}
{{- define "poet.replicaCount" -}}
{{- if kindIs "invalid" .Values.replicaCount }}3{{ else }}{{ .Values.replicaCount | int }}{{ end -}}
{{- end -}}

{{/*
Combinations values.schema.json cannot refuse, refused with a message that says what to
do (the schema refuses autoscaling in sqlite mode, and replicaCount beside the
autoscaler). Included by templates/checks.yaml, which renders nothing else.
*/}}
{{- define "poet.checks" -}}
{{- $replicas := .Values.replicaCount -}}
{{- if include "poet.postgresql" . -}}
{{- if include "poet.autoscaling" . -}}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%v) is above autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- $fewest := ternary (int .Values.autoscaling.minReplicas) (int (include "poet.replicaCount" .)) (eq (include "poet.autoscaling" .) "true") -}}
{{- $minAvailable := .Values.podDisruptionBudget.minAvailable -}}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" $minAvailable)) (not (kindIs "string" $minAvailable)) -}}
{{- if ge (int $minAvailable) $fewest -}}
{{- fail (printf "podDisruptionBudget.minAvailable=%v with as few as %d replicas: no pod could ever be evicted, and node drains would wait forever; lower it, or say podDisruptionBudget.maxUnavailable=0 if that is what you want" $minAvailable $fewest) -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- if and (not (kindIs "invalid" $replicas)) (ne (int $replicas) 1) -}}
{{- fail (printf "replicaCount=%v: database.mode=sqlite runs exactly one replica (one SQLite file on one volume has one writer); set database.mode=postgresql, with database.postgresql.existingSecret, for several" $replicas) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The pod template of either workload: the StatefulSet (sqlite) or the Deployment (postgresql). */}}
{{- define "poet.podTemplate" -}}
{{- $namespaces := eq .Values.sandbox.mode "namespaces" -}}
{{- $postgresql := include "poet.postgresql" . -}}
metadata:
  labels:
    {{- include "poet.labels" . | nindent 4 }}
spec:
  hostUsers: {{ .Values.hostUsers }}
  # No Kubernetes API calls; and no service links, whose variables of a Service
  # named poet would start with POET_ like the settings.
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ add .Values.shutdown.drainSeconds .Values.shutdown.graceSeconds 15 }}
  {{- if .Values.affinity }}
  affinity:
    {{- toYaml .Values.affinity | nindent 4 }}
  {{- else if and $postgresql (ne .Values.podAntiAffinity "none") }}
  # Replicas on different nodes: a node's loss or drain takes one.
  affinity:
    podAntiAffinity:
      {{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "poet.selectorLabels" . | fromYaml)) }}
      {{- if eq .Values.podAntiAffinity "hard" }}
      requiredDuringSchedulingIgnoredDuringExecution:
        {{- toYaml (list $term) | nindent 8 }}
      {{- else }}
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            {{- toYaml $term | nindent 12 }}
      {{- end }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: poet
      image: {{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      ports:
        - name: grpc
          containerPort: 50051
          protocol: TCP
        - name: http
          containerPort: 8080
          protocol: TCP
      env:
        - name: POET_GRPC_LISTEN
          value: "0.0.0.0:50051"
        - name: POET_HTTP_LISTEN
          value: "0.0.0.0:8080"
        - name: POET_DB
          {{- if $postgresql }}
          # The database's URL, password included, from the operator's Secret.
          valueFrom:
            secretKeyRef:
              name: {{ .Values.database.postgresql.existingSecret }}
              key: {{ .Values.database.postgresql.secretKey }}
          {{- else }}
          value: /data/poet.db
          {{- end }}
        - name: POET_LOG_FORMAT
          value: {{ .Values.logFormat }}
        - name: POET_SANDBOX
          value: {{ .Values.sandbox.mode }}
        - name: POET_SHUTDOWN_DRAIN_SECONDS
          value: {{ .Values.shutdown.drainSeconds | quote }}
        - name: POET_SHUTDOWN_GRACE_SECONDS
          value: {{ .Values.shutdown.graceSeconds | quote }}
        - name: POET_READINESS_MAX_RSS_BYTES
          value: {{ .Values.readinessMaxRssBytes | int64 | quote }}
        {{- if .Values.auth.insecure }}
        - name: POET_INSECURE
          value: "true"
        {{- else }}
        - name: POET_AUTH_FILE
          value: /etc/poet/auth/auth.json
        {{- end }}
        {{- with .Values.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      startupProbe:
        {{- include "poet.probe" (dict "probe" .Values.probes.startup "service" "" "path" "/health/live") | nindent 8 }}
      livenessProbe:
        {{- include "poet.probe" (dict "probe" .Values.probes.liveness "service" "" "path" "/health/live") | nindent 8 }}
      readinessProbe:
        {{- include "poet.probe" (dict "probe" .Values.probes.readiness "service" "poet.v1.PoetService" "path" "/health/ready") | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- $securityContext := deepCopy .Values.securityContext }}
        {{- if $namespaces }}
        {{- $_ := set $securityContext "seccompProfile" .Values.sandbox.seccompProfile }}
        {{- with .Values.sandbox.appArmorProfile }}
        {{- $_ := set $securityContext "appArmorProfile" . }}
        {{- end }}
        {{- end }}
        {{- toYaml $securityContext | nindent 8 }}
      volumeMounts:
        {{- if not $postgresql }}
        - name: data
          mountPath: /data
        {{- end }}
        - name: tmp
          mountPath: /tmp
        {{- if not .Values.auth.insecure }}
        - name: auth
          mountPath: /etc/poet/auth
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
    {{- if not .Values.auth.insecure }}
    - name: auth
      secret:
        secretName: {{ .Values.auth.secretName }}
        defaultMode: 0440
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
