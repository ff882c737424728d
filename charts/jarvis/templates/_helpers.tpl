{{/* Chart name (nameOverride wins). */}}
{{- define "jarvis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: `<release>-jarvis`, or the release name when it already contains the chart name. */}}
{{- define "jarvis.fullname" -}}
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

{{- define "jarvis.router.fullname" -}}
{{- printf "%s-router" (include "jarvis.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator's WATCH_NAMESPACE: the values' list, or the release namespace. */}}
{{- define "jarvis.operator.watchNamespaces" -}}
{{- $names := .Values.operator.watchNamespaces | default (list .Release.Namespace) -}}
{{- if and (has "*" $names) (gt (len $names) 1) -}}
{{- fail "operator.watchNamespaces: \"*\" (every namespace) cannot be combined with names" -}}
{{- end -}}
{{- join "," $names -}}
{{- end }}

{{/* Where the routers create workspaces (their JARVIS_KUBE_NAMESPACE). */}}
{{- define "jarvis.router.kubeNamespace" -}}
{{- .Release.Namespace -}}
{{- end }}

{{/*
The operator's JARVIS_WARM_POOL_NAMESPACES: with `["*"]` and a pool, the routers'
namespace (where they claim pool pods); else empty, the pool then kept in each
watched namespace.
*/}}
{{- define "jarvis.operator.warmPoolNamespaces" -}}
{{- if and (eq (include "jarvis.operator.watchNamespaces" .) "*") (gt (int .Values.sandbox.warmPool) 0) -}}
{{- include "jarvis.router.kubeNamespace" . -}}
{{- end -}}
{{- end }}

{{/* Cluster-scoped objects carry the release namespace: releases in two namespaces never share one. */}}
{{- define "jarvis.operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "jarvis.operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jarvis.operator.fullname" -}}
{{- printf "%s-operator" (include "jarvis.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The chart's own Secret of router settings given as values. */}}
{{- define "jarvis.router.secretName" -}}
{{- include "jarvis.router.fullname" . }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "jarvis.labels" -}}
app.kubernetes.io/name: {{ include "jarvis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "jarvis.commonLabels" . }}
{{- end }}

{{/* The labels beside name and instance (pod templates add them to their selector labels). */}}
{{- define "jarvis.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jarvis
{{- end }}

{{/*
Router pod selector labels. The operator gets the same set as
JARVIS_ROUTER_POD_LABELS (the sandbox NetworkPolicies let only these pods in and out).
*/}}
{{- define "jarvis.router.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jarvis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: router
{{- end }}

{{/* The router selector labels as `k=v,k=v` (sorted by key). */}}
{{- define "jarvis.router.selectorLabelsCSV" -}}
{{- $pairs := list }}
{{- range $key, $value := (include "jarvis.router.selectorLabels" . | fromYaml) }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{- define "jarvis.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jarvis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of the sandbox pods the operator makes (operator/src/controller/build.rs). */}}
{{- define "jarvis.sandbox.selectorLabels" -}}
app.kubernetes.io/name: jarvis-sandbox
app.kubernetes.io/managed-by: jarvis-operator
{{- end }}

{{/* image reference: dict "image" .Values.x.image "context" $ */}}
{{- define "jarvis.image" -}}
{{- printf "%s:%s" .image.repository (default .context.Chart.AppVersion .image.tag | toString) }}
{{- end }}

{{/* The restricted pod-level securityContext of router and operator. */}}
{{- define "jarvis.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The restricted container-level securityContext of router and operator. */}}
{{- define "jarvis.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Prometheus scrape annotations: dict "port" N "enabled" bool */}}
{{- define "jarvis.metricsAnnotations" -}}
{{- if .enabled -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
One env entry read from a Secret. Arguments (dict):
  env       variable name
  value     the value given in values.yaml (stored in the chart's Secret)
  existing  name of a Secret the installer made ("" for none)
  key       key in that Secret, and in the chart's Secret
  context   the root context
Renders nothing when neither is set: the variable is optional.
*/}}
{{- define "jarvis.secretEnv" -}}
{{- if .existing -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .existing | quote }}
      key: {{ .key | quote }}
{{- else if .value -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "jarvis.router.secretName" .context | quote }}
      key: {{ .key | quote }}
{{- end }}
{{- end }}

{{/* Refuse an install that cannot work, with the value to set. */}}
{{- define "jarvis.validate" -}}
{{- if not .Values.database.existingSecret }}
{{- $_ := required "database.url or database.existingSecret is required: the router needs Postgres (e.g. --set database.url=postgres://user:pass@host:5432/jarvis)" .Values.database.url }}
{{- end }}
{{- $_ := required "router.storage is required: object storage such as s3://BUCKET (the router's root filesystem is read-only)" .Values.router.storage }}
{{- if .Values.ingress.enabled }}
{{- $_ := required "ingress.host is required when ingress.enabled is true" .Values.ingress.host }}
{{- end }}
{{- if le (int .Values.sandbox.uid) 0 }}
{{- fail "sandbox.uid must be a non-root uid (> 0)" }}
{{- end }}
{{- end }}

{{/* The router's container and Service port (fixed: see values.yaml router.service). */}}
{{- define "jarvis.router.port" -}}
8080
{{- end }}

{{/*
The router's sandbox port (`JARVIS_SANDBOX_LISTEN`): only the sandboxes' `/v1/…`
routes, reached by sandbox pods only; the operator points pods' gateway URL here.
*/}}
{{- define "jarvis.router.sandboxPort" -}}
8081
{{- end }}

{{/*
The router's egress proxy port (`JARVIS_EGRESS_LISTEN`, values router.egressPort):
the sandboxes' one way to the internet, reached by sandbox pods only; the operator
points pods' `--egress-proxy` here.
*/}}
{{- define "jarvis.router.egressPort" -}}
{{- .Values.router.egressPort | default 8082 | int -}}
{{- end }}

{{/* Egress rules of router and operator: cluster DNS and the API server. */}}
{{- define "jarvis.egressDNSandAPI" -}}
# Cluster DNS.
- to:
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 8 }}
  ports:
    - { protocol: UDP, port: 53 }
    - { protocol: TCP, port: 53 }
# The Kubernetes API server (a policy cannot select it by labels).
- {{- with .Values.networkPolicy.apiServerCIDRs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . | quote }}
    {{- end }}
  {{- end }}
  ports:
    {{- range .Values.networkPolicy.apiServerPorts }}
    - { protocol: TCP, port: {{ . }} }
    {{- end }}
{{- end }}
