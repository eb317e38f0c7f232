{{/* Names, labels and the pieces every component's pod shares. */}}

{{- define "flotilla.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "flotilla.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; pass (dict "root" $ "component" "router"). */}}
{{- define "flotilla.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "flotilla.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: flotilla
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "flotilla.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flotilla.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The ServiceAccount of a component: (dict "root" $ "component" "operator"). */}}
{{- define "flotilla.serviceAccountName" -}}
{{- $values := index .root.Values .component -}}
{{- if $values.serviceAccount.create -}}
{{- default (printf "%s-%s" (include "flotilla.fullname" .root) .component) $values.serviceAccount.name -}}
{{- else -}}
{{- default "default" $values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "flotilla.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Pod-level settings shared by every component: (dict "root" $ "component" "router"). */}}
{{- define "flotilla.podSpecCommon" -}}
{{- $values := index .root.Values .component -}}
serviceAccountName: {{ include "flotilla.serviceAccountName" . }}
automountServiceAccountToken: true
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end -}}

{{/* Container-level settings shared by every component. */}}
{{- define "flotilla.containerCommon" -}}
{{- $values := index .root.Values .component -}}
image: {{ include "flotilla.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml .root.Values.containerSecurityContext | nindent 2 }}
resources:
  {{- toYaml $values.resources | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{/* The ServiceAccount object of a component, when it is created by the chart. */}}
{{- define "flotilla.serviceAccount" -}}
{{- $values := index .root.Values .component -}}
{{- if $values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "flotilla.serviceAccountName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "flotilla.labels" . | nindent 4 }}
  {{- with $values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end }}
{{- end -}}

{{/* The router's config file: the user's settings plus the listen address and kube discovery. */}}
{{- define "flotilla.routerConfig" -}}
{{- $discovery := dict -}}
{{- with .Values.router.watchNamespace }}{{ $_ := set $discovery "namespace" . }}{{ end -}}
{{- $fixed := dict "host" "0.0.0.0" "port" (int .Values.router.port) "kubernetes" $discovery -}}
{{- $auth := dict "mode" .Values.router.auth.mode -}}
{{- if eq .Values.router.auth.mode "api_keys" }}{{ $_ := set $auth "keys_dir" "/etc/flotilla-api-keys" }}{{ end -}}
{{- $shared := .Values.router.sharedState -}}
{{- if $shared.enabled -}}
{{- $peers := dict "url" (default (printf "nats://%s-nats:4222" (include "flotilla.fullname" .)) $shared.url) -}}
{{- if include "flotilla.natsTokenSecret" . }}{{ $_ := set $peers "token_file" "/etc/flotilla-nats/token" }}{{ end -}}
{{- $_ := set $fixed "peers" $peers -}}
{{- end -}}
{{- toYaml (merge $fixed (deepCopy .Values.router.config) (dict "auth" $auth)) -}}
{{- end -}}

{{/* The Secret holding the NATS token the routers present, or empty for none. */}}
{{- define "flotilla.natsTokenSecret" -}}
{{- $shared := .Values.router.sharedState -}}
{{- if $shared.existingSecret -}}{{ $shared.existingSecret }}
{{- else if not $shared.url -}}{{ include "flotilla.fullname" . }}-nats
{{- end -}}
{{- end -}}
