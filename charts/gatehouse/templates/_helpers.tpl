{{/* Labels every Gatehouse object carries. */}}
{{- define "gatehouse.labels" -}}
app.kubernetes.io/name: gatehouse
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The labels a component's pods are selected by. Args: root, component. */}}
{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: gatehouse
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Pods run as a fixed unprivileged user with the runtime's default seccomp profile. */}}
{{- define "gatehouse.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* Containers: no privilege escalation, read-only root file system, no capabilities. */}}
{{- define "gatehouse.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{/* nodeSelector, tolerations and affinity of a component's values. */}}
{{- define "gatehouse.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The S3 store's environment (the proxy's and the operator's flags read it). Arg: root. */}}
{{- define "gatehouse.s3Env" -}}
{{- $storage := .Values.recording.storage -}}
{{- with $storage.s3.endpoint }}
- {name: GATEHOUSE_S3_ENDPOINT, value: {{ . | quote }}}
{{- end }}
- {name: GATEHOUSE_S3_BUCKET, value: {{ $storage.s3.bucket | quote }}}
- {name: GATEHOUSE_S3_REGION, value: {{ $storage.s3.region | quote }}}
- {name: GATEHOUSE_S3_PATH_STYLE, value: {{ $storage.s3.pathStyle | quote }}}
- {name: GATEHOUSE_S3_PREFIX, value: {{ $storage.s3.prefix | quote }}}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ $storage.s3.credentialsSecret.name | quote }}, key: {{ $storage.s3.credentialsSecret.accessKeyIdKey | quote }}}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ $storage.s3.credentialsSecret.name | quote }}, key: {{ $storage.s3.credentialsSecret.secretAccessKeyKey | quote }}}}
{{- end -}}

{{/* Where the operator stores audit batches: s3, local (the recordings claim) or none. */}}
{{- define "gatehouse.operatorAuditStore" -}}
{{- $storage := .Values.recording.storage -}}
{{- if not .Values.audit.operator.enabled -}}none
{{- else if eq $storage.type "s3" -}}s3
{{- else if $storage.volume.existingClaim -}}local
{{- else -}}none
{{- end -}}
{{- end -}}
