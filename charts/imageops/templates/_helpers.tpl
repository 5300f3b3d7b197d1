{{/* Chart name, overridable. */}}
{{- define "imageops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name; kept short enough for the "-controller" suffix. */}}
{{- define "imageops.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "imageops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "imageops.labels" -}}
helm.sh/chart: {{ include "imageops.chart" . }}
{{ include "imageops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: imageops
{{- end -}}

{{/* Labels the Service and the workloads select by (plus app.kubernetes.io/component). */}}
{{- define "imageops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imageops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* repository@digest when image.digest is set (digest-first), else repository:tag. */}}
{{- define "imageops.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Metrics port of a role: (dict "root" $ "role" "agent"). */}}
{{- define "imageops.metricsPort" -}}
{{- $p := (index .root.Values .role).metricsPort -}}
{{- if kindIs "invalid" $p -}}{{ .root.Values.metrics.port }}{{- else -}}{{ $p }}{{- end -}}
{{- end -}}

{{/* hostNetwork and dnsPolicy of both roles' pods. */}}
{{- define "imageops.podNetwork" -}}
{{- if .Values.hostNetwork }}
hostNetwork: true
{{- end }}
{{- if .Values.dnsPolicy }}
dnsPolicy: {{ .Values.dnsPolicy }}
{{- else if .Values.hostNetwork }}
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- end -}}

{{/* The API server address override: what in-cluster clients read. */}}
{{- define "imageops.apiServerEnv" -}}
{{- with .Values.apiServer.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ . | quote }}
{{- end }}
{{- if not (kindIs "invalid" .Values.apiServer.port) }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.apiServer.port | quote }}
{{- end }}
{{- end -}}

{{/* ServiceAccount name of a role: (dict "root" $ "role" "agent"). */}}
{{- define "imageops.serviceAccountName" -}}
{{- $sa := (index .root.Values .role).serviceAccount -}}
{{- if $sa.create -}}
{{- default (printf "%s-%s" (include "imageops.fullname" .root) .role) $sa.name -}}
{{- else -}}
{{- required (printf "%s.serviceAccount.name is required when %s.serviceAccount.create is false" .role .role) $sa.name -}}
{{- end -}}
{{- end -}}

{{/* What `imageops run` watches: --namespace per watched namespace, else --all-namespaces. */}}
{{- define "imageops.scopeArgs" -}}
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace
- {{ . | quote }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
{{- end -}}

{{/* Liveness and readiness probes of both roles (the operator serves /healthz and /readyz on its metrics port). */}}
{{- define "imageops.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  initialDelaySeconds: 10
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 3
# /readyz: every watch established and working; /healthz fails only once a
# watch has been down longer than --watch-down-seconds (300), or the loop is stuck.
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  # The first probe comes as the container starts, before the operator listens;
  # at the default 10 s period that alone held Ready back ~10 s after the
  # operator was ready (helm install --wait: 14.5 s). /readyz is a local read.
  periodSeconds: 2
  timeoutSeconds: 2
{{- end -}}

{{/* Pod security context, with the Docker socket's group for the agent. */}}
{{- define "imageops.podSecurityContext" -}}
{{- $ctx := deepCopy .root.Values.podSecurityContext -}}
{{- if and (eq .role "agent") (not (kindIs "invalid" .root.Values.agent.dockerGid)) -}}
{{- $groups := concat (default (list) $ctx.supplementalGroups) (list (int64 .root.Values.agent.dockerGid)) -}}
{{- $_ := set $ctx "supplementalGroups" $groups -}}
{{- end -}}
{{- toYaml $ctx -}}
{{- end -}}

{{/* Rules of the agent on the namespaced objects of the namespaces it serves. */}}
{{- define "imageops.agent.namespacedRules" -}}
# Its node's ImageOperations (the watch is filtered by spec.nodeName).
- apiGroups: [imageops.dev]
  resources: [imageoperations]
  verbs: [get, list, watch]
# Phase, progress, conditions and results; never the spec.
- apiGroups: [imageops.dev]
  resources: [imageoperations/status]
  verbs: [get, patch, update]
# The defaults of an operation's spec.sessionRef, read by name when a run starts.
- apiGroups: [imageops.dev]
  resources: [imagesessions]
  verbs: [get]
# spec.credentials.secretRef, read by name only: no list or watch of Secrets.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Started, Retrying, Succeeded, Failed (the agent's and kopf's Events).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* Rules of the controller on the namespaced objects of the namespaces it serves. */}}
{{- define "imageops.controller.namespacedRules" -}}
# Assigns nodes (spec.nodeName); creates and deletes the operations of Workflows and sessions.
- apiGroups: [imageops.dev]
  resources: [imageoperations]
  verbs: [get, list, watch, create, patch, update, delete]
# A Workflow's own session (spec.createSession) is created and, with it, deleted;
# Workflows are deleted after ttlSecondsAfterFinished or with their expired session.
- apiGroups: [imageops.dev]
  resources: [imagesessions]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [imageops.dev]
  resources: [workflows]
  verbs: [get, list, watch, patch, update, delete]
- apiGroups: [imageops.dev]
  resources: [imageoperations/status, workflows/status, imagesessions/status]
  verbs: [get, patch, update]
# The session log archive.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, update]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* kopf discovers and watches the CRDs of the kinds it serves (cluster-scoped). */}}
{{- define "imageops.crdReadRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
{{- end -}}

{{/*
With explicit namespaces kopf 1.45 lists and watches Namespaces (to match its namespace
patterns) unless settings.scanning.disabled; forbidden, it retries for ~54 s at every
start (error_backoffs 1+1+2+3+5+8+13+21) before falling back. Read-only; names and labels.
*/}}
{{- define "imageops.namespaceReadRules" -}}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end -}}
