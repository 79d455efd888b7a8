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

{{/* Secret files as *_FILE variables (schemas.settings reads NAME_FILE for any NAME). */}}
{{- define "f2.secretEnv" -}}
- name: F2_MQTT_PASSWORD_FILE
  value: /var/run/secrets/f2/mqtt-password
- name: F2_PARAMS_DSN_FILE
  value: /var/run/secrets/f2/params-dsn
- name: F2_TIMESERIES_DSN_FILE
  value: /var/run/secrets/f2/timeseries-dsn
- name: F2_REDIS_URL_FILE
  value: /var/run/secrets/f2/redis-url
{{- if .Values.secrets.kafkaSaslPassword }}
- name: F2_KAFKA_SASL_PASSWORD_FILE
  value: /var/run/secrets/f2/kafka-sasl-password
{{- end }}
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
