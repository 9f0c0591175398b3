{{/*
Names, labels and shared pod settings. Every resource name is made here, so
that templates and tests agree on them.
*/}}

{{- define "cmbtask.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cmbtask.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Component names: <fullname>-gateway, <fullname>-operator. */}}
{{- define "cmbtask.gateway.fullname" -}}
{{- printf "%s-gateway" (include "cmbtask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cmbtask.operator.fullname" -}}
{{- printf "%s-operator" (include "cmbtask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cmbtask.runner.fullname" -}}
{{- printf "%s-runner" (include "cmbtask.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cmbtask.signingKeySecretName" -}}
{{- default (printf "%s-signing-key" (include "cmbtask.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "cmbtask.databaseSecretName" -}}
{{- default (printf "%s-database" (include "cmbtask.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{- define "cmbtask.dataClaimName" -}}
{{- printf "%s-data" (include "cmbtask.gateway.fullname" .) -}}
{{- end -}}

{{/* "true" when the gateway keeps SQLite on its own volume. */}}
{{- define "cmbtask.sqlite" -}}
{{- if not (or .Values.database.url .Values.database.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "cmbtask.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "cmbtask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: cmbtask
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "gateway"). */}}
{{- define "cmbtask.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cmbtask.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of a component's objects: common plus selector labels. */}}
{{- define "cmbtask.componentLabels" -}}
{{ include "cmbtask.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference: (dict "ctx" $ "image" .Values.gateway.image). */}}
{{- define "cmbtask.image" -}}
{{- $tag := .image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}

{{/* The URL runner pods dial back to: the gateway Service's cluster DNS name. */}}
{{- define "cmbtask.gateway.publicUrl" -}}
{{- if .Values.gateway.publicUrl -}}
{{- .Values.gateway.publicUrl -}}
{{- else -}}
{{- printf "http://%s.%s.svc.%s:%v" (include "cmbtask.gateway.fullname" .) .Release.Namespace .Values.clusterDomain .Values.gateway.service.port -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the operator serves (and where runner pods run). */}}
{{- define "cmbtask.operator.namespaces" -}}
{{- if .Values.operator.clusterWide -}}
{{- list | toJson -}}
{{- else -}}
{{- /* The release namespace always: the gateway creates its CmbTasks there. */ -}}
{{- prepend .Values.operator.watchNamespaces .Release.Namespace | uniq | toJson -}}
{{- end -}}
{{- end -}}

{{/* Namespaces that get per-namespace objects (Roles, network policies, peerings). */}}
{{- define "cmbtask.runnerNamespaces" -}}
{{- if .Values.operator.clusterWide -}}
{{- list .Release.Namespace | toJson -}}
{{- else -}}
{{- include "cmbtask.operator.namespaces" . -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security: a numeric non-root user, the runtime's seccomp profile. */}}
{{- define "cmbtask.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security: nothing to escalate to, nothing to write but volumes. */}}
{{- define "cmbtask.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}


{{/* Gateway settings that come from Secrets: the signing key, the database URL. */}}
{{- define "cmbtask.gateway.secretEnv" -}}
- name: CMBTASK_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "cmbtask.signingKeySecretName" . }}
      key: secret-key
{{- if not (include "cmbtask.sqlite" .) }}
- name: CMBTASK_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cmbtask.databaseSecretName" . }}
      key: {{ .Values.database.existingSecretKey }}
{{- end }}
{{- end -}}

{{/* The gateway writes only to its data directory and /tmp (root filesystem is read-only). */}}
{{- define "cmbtask.gateway.volumeMounts" -}}
- name: data
  mountPath: /var/lib/cmbtask
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/*
"true" when the chart installs the admission policies that stamp who made a
kubectl decision (templates/gateway/decision-policies.yaml), else empty. auto:
where the API server offers MutatingAdmissionPolicy (helm install asks it;
helm template offline knows only what --api-versions says).
*/}}
{{- define "cmbtask.decisionPolicies" -}}
{{- $mode := toString .Values.gateway.kubectlDecisions.admissionPolicies -}}
{{- if eq $mode "auto" -}}
{{- if .Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy" }}true{{ end -}}
{{- else if eq $mode "true" -}}true{{- end -}}
{{- end -}}
