{{/*
Labels of every object of the chart, besides `cluster.x-k8s.io/provider`.
Call with (dict "root" $ "component" "bootstrap"|"control-plane").
*/}}
{{- define "microk8s-capi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: cluster-api
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/*
What differs between the two providers, as YAML (use with fromYaml). Argument: "bootstrap" or
"controlPlane" (the key of the provider's values).
*/}}
{{- define "microk8s-capi.provider" -}}
{{- if eq . "bootstrap" -}}
provider: bootstrap-microk8s
prefix: capi-microk8s-bootstrap
command: /mk8s-bootstrap
component: bootstrap
{{- else -}}
provider: control-plane-microk8s
prefix: capi-microk8s-control-plane
command: /mk8s-controlplane
component: control-plane
{{- end -}}
{{- end }}

{{/*
The selector of a provider's pods: the same labels as our release manifests, so a Deployment
installed by either can be taken over by the other (a selector is immutable). Canonical's
Deployments select `control-plane` only: they are deleted before a takeover (README).
Argument: the provider's info (from "microk8s-capi.provider").
*/}}
{{- define "microk8s-capi.selector" -}}
cluster.x-k8s.io/provider: {{ .provider }}
control-plane: controller-manager
{{- end }}

{{/* The image reference. */}}
{{- define "microk8s-capi.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end }}

{{/*
One provider's manager Deployment. Call with (dict "root" $ "key" "bootstrap"|"controlPlane").
*/}}
{{- define "microk8s-capi.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $p := index $v .key -}}
{{- $i := include "microk8s-capi.provider" .key | fromYaml -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $i.prefix }}-controller-manager
  namespace: {{ $p.namespace | quote }}
  labels:
    {{- include "microk8s-capi.selector" $i | nindent 4 }}
    {{- include "microk8s-capi.labels" (dict "root" $root "component" $i.component) | nindent 4 }}
spec:
  replicas: {{ int $p.replicas }}
  selector:
    matchLabels:
      {{- include "microk8s-capi.selector" $i | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "microk8s-capi.selector" $i | nindent 8 }}
        {{- include "microk8s-capi.labels" (dict "root" $root "component" $i.component) | nindent 8 }}
        {{- with $p.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        kubectl.kubernetes.io/default-container: manager
        {{- with $p.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ $i.prefix }}-controller-manager
      terminationGracePeriodSeconds: {{ int $v.terminationGracePeriodSeconds }}
      {{- with $v.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . | quote }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: manager
          image: {{ include "microk8s-capi.image" $root | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command:
            - {{ $i.command }}
          args:
            - {{ printf "--leader-elect=%t" $p.leaderElection.enabled | quote }}
            {{- if $p.leaderElection.enabled }}
            - {{ printf "--leader-election-lease-duration=%d" (int $p.leaderElection.leaseDuration) | quote }}
            {{- end }}
            {{- if $v.metrics.enabled }}
            - {{ printf "--metrics-bind-address=:%d" (int $v.metrics.port) | quote }}
            {{- else }}
            - "--metrics-bind-address=0"
            {{- end }}
            - {{ printf "--health-probe-bind-address=:%d" (int $v.healthPort) | quote }}
            {{- with $p.watchNamespace }}
            - {{ printf "--namespace=%s" . | quote }}
            {{- end }}
            {{- with $p.watchFilter }}
            - {{ printf "--watch-filter=%s" . | quote }}
            {{- end }}
            - {{ printf "--concurrency=%d" (int $p.concurrency) | quote }}
            - {{ printf "--kube-api-qps=%v" $p.kubeAPI.qps | quote }}
            - {{ printf "--kube-api-burst=%d" (int $p.kubeAPI.burst) | quote }}
            - {{ printf "--log-format=%s" $p.logging.format | quote }}
            - {{ printf "--log-level=%s" $p.logging.level | quote }}
            {{- with $p.nodeActionImage }}
            - {{ printf "--node-action-image=%s" . | quote }}
            {{- end }}
            {{- range $p.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            # The Lease identity and namespace.
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            {{- with $p.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            {{- if $v.metrics.enabled }}
            - name: metrics
              containerPort: {{ int $v.metrics.port }}
              protocol: TCP
            {{- end }}
            - name: healthz
              containerPort: {{ int $v.healthPort }}
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /healthz
              port: healthz
            initialDelaySeconds: 15
            periodSeconds: 20
          readinessProbe:
            httpGet:
              path: /readyz
              port: healthz
            initialDelaySeconds: 5
            periodSeconds: 10
          {{- with $p.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $v.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          terminationMessagePolicy: FallbackToLogsOnError
{{- end }}

{{/*
One provider's metrics Service and (optionally) ServiceMonitor.
Call with (dict "root" $ "key" "bootstrap"|"controlPlane").
*/}}
{{- define "microk8s-capi.metrics" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $p := index $v .key -}}
{{- $i := include "microk8s-capi.provider" .key | fromYaml -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ $i.prefix }}-controller-manager-metrics-service
  namespace: {{ $p.namespace | quote }}
  labels:
    {{- include "microk8s-capi.selector" $i | nindent 4 }}
    {{- include "microk8s-capi.labels" (dict "root" $root "component" $i.component) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "microk8s-capi.selector" $i | nindent 4 }}
  ports:
    - name: metrics
      port: {{ int $v.metrics.port }}
      targetPort: metrics
      protocol: TCP
{{- if $v.metrics.serviceMonitor.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ $i.prefix }}-controller-manager
  namespace: {{ $p.namespace | quote }}
  labels:
    {{- include "microk8s-capi.selector" $i | nindent 4 }}
    {{- include "microk8s-capi.labels" (dict "root" $root "component" $i.component) | nindent 4 }}
    {{- with $v.metrics.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "microk8s-capi.selector" $i | nindent 6 }}
      app.kubernetes.io/instance: {{ $root.Release.Name }}
  namespaceSelector:
    matchNames:
      - {{ $p.namespace | quote }}
  endpoints:
    - port: metrics
      path: /metrics
      scheme: http
      {{- with $v.metrics.serviceMonitor.interval }}
      interval: {{ . }}
      {{- end }}
      {{- with $v.metrics.serviceMonitor.scrapeTimeout }}
      scrapeTimeout: {{ . }}
      {{- end }}
{{- end }}
{{- end }}
