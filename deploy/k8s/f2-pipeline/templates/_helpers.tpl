{{/* Name of the release's objects: the release name, with the chart name when missing. */}}
{{- define "f2.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "f2.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "decode"). */}}
{{- define "f2.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "f2.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "f2.secretName" -}}
{{- if .Values.secrets.create -}}
{{- printf "%s-secrets" (include "f2.fullname" .) -}}
{{- else -}}
{{- required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "f2.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "f2.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Secret files as *_FILE variables (schemas.settings reads NAME_FILE for any NAME). The
database DSNs are per login role: call with (dict "ctx" $ "dsn" "") for the flows (f2_pipeline),
"health-" for the health API (f2_reader), "migrate-" for the migrations (the owner). */}}
{{- define "f2.secretEnv" -}}
{{- $dsn := .dsn -}}
{{- with .ctx -}}
- name: F2_PARAMS_DSN_FILE
  value: /var/run/secrets/f2/{{ $dsn }}params-dsn
- name: F2_TIMESERIES_DSN_FILE
  value: /var/run/secrets/f2/{{ $dsn }}timeseries-dsn
{{- if eq $dsn "migrate-" }}
- name: F2_DB_PIPELINE_PASSWORD_FILE
  value: /var/run/secrets/f2/db-pipeline-password
- name: F2_DB_READER_PASSWORD_FILE
  value: /var/run/secrets/f2/db-reader-password
{{- else }}
- name: F2_MQTT_PASSWORD_FILE
  value: /var/run/secrets/f2/mqtt-password
- name: F2_REDIS_URL_FILE
  value: /var/run/secrets/f2/redis-url
{{- if .Values.secrets.kafkaSaslPassword }}
- name: F2_KAFKA_SASL_PASSWORD_FILE
  value: /var/run/secrets/f2/kafka-sasl-password
{{- end }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* envFrom of every F2 container: the shared settings and the librdkafka settings. */}}
{{- define "f2.envFrom" -}}
- configMapRef:
    name: {{ include "f2.fullname" . }}-config
{{- end -}}

{{/* Bytewax addresses of a flow's processes; call with (dict "ctx" $ "flow" "decode"). */}}
{{- define "f2.addresses" -}}
{{- $ctx := .ctx -}}
{{- $name := printf "%s-%s" (include "f2.fullname" $ctx) .flow -}}
{{- $replicas := int (index $ctx.Values .flow).replicas -}}
{{- $hosts := list -}}
{{- range $i := until $replicas -}}
{{- $hosts = append $hosts (printf "%s-%d.%s.%s.svc.%s:%d" $name $i $name $ctx.Release.Namespace $ctx.Values.clusterDomain (int $ctx.Values.clusterPort)) -}}
{{- end -}}
{{- join ";" $hosts -}}
{{- end -}}

{{/* The secret volume of one login role (see f2.secretEnv): only that role's keys are projected,
so the flows' pods never hold the owner's DSN. Call with (dict "ctx" $ "dsn" "" "name" "secrets"). */}}
{{- define "f2.secretVolume" -}}
{{- $dsn := .dsn -}}
{{- with .ctx -}}
- name: {{ $.name }}
  secret:
    secretName: {{ include "f2.secretName" . }}
    defaultMode: 0440
    items:
      {{- $keys := list (printf "%sparams-dsn" $dsn) (printf "%stimeseries-dsn" $dsn) }}
      {{- if eq $dsn "migrate-" }}
      {{- $keys = concat $keys (list "db-pipeline-password" "db-reader-password") }}
      {{- else }}
      {{- $keys = concat $keys (list "mqtt-password" "redis-url") }}
      {{- if .Values.secrets.kafkaSaslPassword }}
      {{- $keys = append $keys "kafka-sasl-password" }}
      {{- end }}
      {{- end }}
      {{- range $keys }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* One egress rule of networkPolicy.egress.<dep>: to its peers on its ports (no peers: any
destination, on those ports only). Call with (dict "ctx" $ "dep" "kafka"). */}}
{{- define "f2.egressRule" -}}
{{- $rule := required (printf "networkPolicy.egress.%s is required" .dep) (index .ctx.Values.networkPolicy.egress .dep) -}}
- ports:
    {{- toYaml (required (printf "networkPolicy.egress.%s.ports is required" .dep) $rule.ports) | nindent 4 }}
  {{- with $rule.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
