{{/*
Names. Every helper is prefixed with the chart name, so that a parent chart's helpers
never collide with these.
*/}}

{{/* The chart's base name. */}}
{{- define "llm-budget-guard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name alone when it already contains the chart's. */}}
{{- define "llm-budget-guard.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-<component>. Call with (list . "webhook"). */}}
{{- define "llm-budget-guard.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "llm-budget-guard.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llm-budget-guard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "llm-budget-guard.labels" -}}
helm.sh/chart: {{ include "llm-budget-guard.chart" . }}
app.kubernetes.io/name: {{ include "llm-budget-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-budget-guard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component. Call with (list . "webhook"). */}}
{{- define "llm-budget-guard.componentLabels" -}}
{{ include "llm-budget-guard.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* The selector of one component's pods. Call with (list . "webhook"). */}}
{{- define "llm-budget-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-budget-guard.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* The ServiceAccount of one component. Call with (list . "operator"). */}}
{{- define "llm-budget-guard.serviceAccountName" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $values := index $root.Values $component }}
{{- if $values.serviceAccount.create }}
{{- default (include "llm-budget-guard.componentName" .) $values.serviceAccount.name }}
{{- else }}
{{- default "default" $values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image, by digest when one is given. */}}
{{- define "llm-budget-guard.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Redis. The URL comes from a Secret: the one the chart creates from redis.url, the
evaluation Redis's, or redis.existingSecret (the default: create it before installing).
*/}}
{{- define "llm-budget-guard.redisSecretName" -}}
{{- if or .Values.redis.url .Values.redis.evaluation.enabled }}
{{- include "llm-budget-guard.componentName" (list . "redis") }}
{{- else }}
{{- .Values.redis.existingSecret }}
{{- end }}
{{- end }}

{{- define "llm-budget-guard.redisSecretKey" -}}
{{- if or .Values.redis.url .Values.redis.evaluation.enabled }}url{{ else }}{{ .Values.redis.existingSecretKey }}{{ end }}
{{- end }}

{{- define "llm-budget-guard.redisUrlEnv" -}}
- name: BUDGET_GUARD_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "llm-budget-guard.redisSecretName" . }}
      key: {{ include "llm-budget-guard.redisSecretKey" . }}
{{- end }}

{{/* The Redis TLS Secret's mount (redis.tlsSecret), for a container's volumeMounts. */}}
{{- define "llm-budget-guard.redisTlsMount" -}}
{{- if .Values.redis.tlsSecret -}}
- name: redis-tls
  mountPath: /etc/budget-guard/redis-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* The Redis TLS Secret's volume (redis.tlsSecret), for a pod's volumes. */}}
{{- define "llm-budget-guard.redisTlsVolume" -}}
{{- if .Values.redis.tlsSecret -}}
- name: redis-tls
  secret:
    secretName: {{ .Values.redis.tlsSecret }}
{{- end }}
{{- end }}

{{/* Namespaces the operator may read alert Secrets in: the release's when none are named. */}}
{{- define "llm-budget-guard.alertSecretNamespaces" -}}
{{- $namespaces := .Values.operator.alertSecretNamespaces | default (list .Release.Namespace) }}
{{- toJson (uniq $namespaces) }}
{{- end }}

{{/* The usage-API token Secret. */}}
{{- define "llm-budget-guard.usageTokenSecretName" -}}
{{- default (include "llm-budget-guard.componentName" (list . "usage-token")) .Values.webhook.usageToken.existingSecret }}
{{- end }}

{{/* The pricing ConfigMap, when there is one. */}}
{{- define "llm-budget-guard.pricingConfigMapName" -}}
{{- if .Values.webhook.pricing.existingConfigMap }}
{{- .Values.webhook.pricing.existingConfigMap }}
{{- else if .Values.webhook.pricing.table }}
{{- include "llm-budget-guard.componentName" (list . "pricing") }}
{{- end }}
{{- end }}

{{/*
An object's annotations block, or nothing: the given annotations, plus the Argo CD sync
wave when argocd.syncWaves is on. Call with (list . "<wave>" <annotations map>) and
render with: {{- with include "llm-budget-guard.annotations" (...) }}{{ . | nindent 2 }}{{- end }}
*/}}
{{- define "llm-budget-guard.annotations" -}}
{{- $root := index . 0 }}
{{- $annotations := merge (dict) (index . 2 | default dict) }}
{{- if $root.Values.argocd.syncWaves }}
{{- $_ := set $annotations "argocd.argoproj.io/sync-wave" (index . 1) }}
{{- end }}
{{- with $annotations -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
