{{/*
The release's full name, which every object is named after: the release name when it contains
the chart's name (so a release named "hubgrade" names everything "hubgrade"), else
"<release>-hubgrade". Two releases therefore never share a name, even for cluster-wide objects.
*/}}
{{- define "hubgrade.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{- define "hubgrade.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "hubgrade.fullname" .) -}}
{{- end }}

{{/* The leader Lease, in the release namespace. */}}
{{- define "hubgrade.leaseName" -}}
{{- printf "%s-leader" (include "hubgrade.fullname" .) -}}
{{- end }}

{{- define "hubgrade.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hubgrade.labels" -}}
{{ include "hubgrade.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "hubgrade.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The one namespace a namespaced operator watches (the default mode): watchNamespace, else the
release's own. Empty when clusterWide: every namespace.
*/}}
{{- define "hubgrade.watchNamespace" -}}
{{- if .Values.clusterWide -}}
{{- if .Values.watchNamespace -}}
{{- fail "watchNamespace names the one namespace of a namespaced operator; clusterWide: true watches every namespace (narrow its Secrets with hubNamespaces)" -}}
{{- end -}}
{{- else -}}
{{- .Values.watchNamespace | default .Release.Namespace -}}
{{- end -}}
{{- end }}
