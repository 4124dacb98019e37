{{/*
=====================================================================================================
Public named templates (sidecar mode). Use them in your own pod spec, from this chart or from a
chart that has this one as a dependency named "dynamiq-sidecar" (its values under that key):

  spec:
    terminationGracePeriodSeconds: {{ add 20 (include "dynamiq-sidecar.terminationGracePeriodSeconds" .) }}
    initContainers:
      {{- include "dynamiq-sidecar.initContainers" . | nindent 6 }}   # native sidecar (k8s >= 1.29)
    containers:
      - name: app
        ...
      {{- include "dynamiq-sidecar.containers" . | nindent 6 }}       # classic fallback (< 1.29)
    volumes:
      {{- include "dynamiq-sidecar.volumes" . | nindent 6 }}

  and on the pod template's metadata.annotations:
      {{- include "dynamiq-sidecar.podAnnotations" . | nindent 8 }}

Each takes the root context (`.`/`$`), or (dict "root" $ "values" $someValues) to pass the values
explicitly (e.g. under an alias).
- dynamiq-sidecar.container          the container, as one list item (with restartPolicy: Always
                                     when it is a native sidecar)
- dynamiq-sidecar.initContainers     that item when it is a native sidecar, else nothing
- dynamiq-sidecar.containers         that item when it is a classic container, else nothing
- dynamiq-sidecar.volumes            the volumes it mounts (config, key Secret, buffer emptyDir,
                                     extraVolumes)
- dynamiq-sidecar.podAnnotations     checksum annotations (roll pods when the config changes)
- dynamiq-sidecar.terminationGracePeriodSeconds   the sidecar's share of the grace period
- dynamiq-sidecar.nativeSidecar      "true" or ""
=====================================================================================================
*/}}

{{/* Fills (index . 1) with "root" and "v" (the chart's values) from the caller's argument (index . 0). */}}
{{- define "dynamiq-sidecar.normalize" -}}
{{- $in := index . 0 -}}
{{- $out := index . 1 -}}
{{- if hasKey $in "root" -}}
{{- $_ := set $out "root" $in.root -}}
{{- if hasKey $in "values" -}}
{{- $_ := set $out "v" $in.values -}}
{{- else if hasKey $in.root.Values "dynamiq-sidecar" -}}
{{- $_ := set $out "v" (index $in.root.Values "dynamiq-sidecar") -}}
{{- else -}}
{{- $_ := set $out "v" $in.root.Values -}}
{{- end -}}
{{- else if hasKey $in.Values "dynamiq-sidecar" -}}
{{- $_ := set $out "root" $in -}}
{{- $_ := set $out "v" (index $in.Values "dynamiq-sidecar") -}}
{{- else -}}
{{- $_ := set $out "root" $in -}}
{{- $_ := set $out "v" $in.Values -}}
{{- end -}}
{{- end -}}

{{/* Chart name (constant, so that a parent chart's includes compute the same names). */}}
{{- define "dynamiq-sidecar.name" -}}
{{- default "dynamiq-sidecar" .v.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dynamiq-sidecar.fullname" -}}
{{- if .v.fullnameOverride -}}
{{- .v.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "dynamiq-sidecar.name" . -}}
{{- if contains $name .root.Release.Name -}}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .root.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dynamiq-sidecar.chartLabel" -}}
{{- printf "dynamiq-sidecar-%s" (.root.Chart.Version | default "0") | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dynamiq-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dynamiq-sidecar.name" . }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .v.mode }}
{{- end -}}

{{- define "dynamiq-sidecar.labels" -}}
helm.sh/chart: {{ include "dynamiq-sidecar.chartLabel" . }}
{{ include "dynamiq-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | default "unknown" | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "dynamiq-sidecar.serviceAccountName" -}}
{{- if .v.serviceAccount.create -}}
{{- default (include "dynamiq-sidecar.fullname" .) .v.serviceAccount.name -}}
{{- else -}}
{{- default "default" .v.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "dynamiq-sidecar.image" -}}
{{- $repo := required "image.repository is required: build the repository's Dockerfile, push the image to your registry and set image.repository (no image is published yet)" .v.image.repository -}}
{{- if .v.image.digest -}}
{{- printf "%s@%s" $repo .v.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .v.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the HTTP listener is not on loopback (daemonset, gateway). */}}
{{- define "dynamiq-sidecar.exposed" -}}
{{- if ne .v.mode "sidecar" }}true{{ end -}}
{{- end -}}

{{/* "true" when the sidecar forwards with its own key (the default), so it needs one. */}}
{{- define "dynamiq-sidecar.needsKey" -}}
{{- if ne (dig "upstream" "auth_mode" "sidecar-key" .v.config) "passthrough" }}true{{ end -}}
{{- end -}}

{{- define "dynamiq-sidecar.accessKeySecretName" -}}
{{- default (include "dynamiq-sidecar.fullname" .) .v.accessKey.existingSecret -}}
{{- end -}}

{{- define "dynamiq-sidecar.accessKeySecretKey" -}}
{{- if .v.accessKey.existingSecret }}{{ .v.accessKey.existingSecretKey }}{{ else }}access-key{{ end -}}
{{- end -}}

{{/* "true" when a separate API token (GET /api/*) is configured. */}}
{{- define "dynamiq-sidecar.hasApiToken" -}}
{{- if or .v.apiToken.value .v.apiToken.existingSecret }}true{{ end -}}
{{- end -}}

{{- define "dynamiq-sidecar.apiTokenSecretName" -}}
{{- default (include "dynamiq-sidecar.fullname" .) .v.apiToken.existingSecret -}}
{{- end -}}

{{- define "dynamiq-sidecar.apiTokenSecretKey" -}}
{{- if .v.apiToken.existingSecret }}{{ .v.apiToken.existingSecretKey }}{{ else }}api-token{{ end -}}
{{- end -}}

{{- define "dynamiq-sidecar.tokenSecretName" -}}
{{- default (include "dynamiq-sidecar.fullname" .) .v.ingestToken.existingSecret -}}
{{- end -}}

{{- define "dynamiq-sidecar.tokenSecretKey" -}}
{{- if .v.ingestToken.existingSecret }}{{ .v.ingestToken.existingSecretKey }}{{ else }}ingest-token{{ end -}}
{{- end -}}

{{/* Paths inside the container. */}}
{{- define "dynamiq-sidecar.configDir" -}}/etc/dynamiq-sidecar{{- end -}}
{{- define "dynamiq-sidecar.configPath" -}}/etc/dynamiq-sidecar/dynamiq-sidecar.toml{{- end -}}
{{- define "dynamiq-sidecar.accessKeyDir" -}}/run/secrets/dynamiq-sidecar/access-key{{- end -}}
{{- define "dynamiq-sidecar.tokenDir" -}}/run/secrets/dynamiq-sidecar/ingest-token{{- end -}}
{{- define "dynamiq-sidecar.apiTokenDir" -}}/run/secrets/dynamiq-sidecar/api-token{{- end -}}
{{- /*
The buffer volume is mounted at bufferMount; buffer.path is a subdirectory the sidecar creates
itself (0700, its own), because the volume's root may belong to root (emptyDir, most claims,
the fsGroup-managed mount) and the sidecar refuses a buffer directory others can reach and it
cannot chmod.
*/ -}}
{{- define "dynamiq-sidecar.bufferMount" -}}/var/lib/dynamiq-sidecar{{- end -}}
{{- define "dynamiq-sidecar.bufferPath" -}}/var/lib/dynamiq-sidecar/buffer{{- end -}}

{{/*
A duration as the binary reads it (humantime: "200ms", "10s", "1m 30s", "1day") in milliseconds.
Only the units up to days are accepted, the same set values.schema.json allows.
*/}}
{{- define "dynamiq-sidecar.durationMillis" -}}
{{- $s := trim (toString .) -}}
{{- if not (regexMatch "^([0-9]+ *[a-z]+ *)+$" $s) -}}
{{- fail (printf "cannot read the duration %q (write it like \"10s\", \"500ms\", \"1m 30s\")" $s) -}}
{{- end -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+ *[a-z]+" $s -1 -}}
{{- $n := atoi (regexFind "^[0-9]+" .) -}}
{{- $unit := trim (regexReplaceAll "^[0-9]+" . "") -}}
{{- $mult := 0 -}}
{{- if has $unit (list "ms" "msec" "millis") -}}{{- $mult = 1 -}}
{{- else if has $unit (list "s" "sec" "secs" "second" "seconds") -}}{{- $mult = 1000 -}}
{{- else if has $unit (list "m" "min" "mins" "minute" "minutes") -}}{{- $mult = 60000 -}}
{{- else if has $unit (list "h" "hr" "hrs" "hour" "hours") -}}{{- $mult = 3600000 -}}
{{- else if has $unit (list "d" "day" "days") -}}{{- $mult = 86400000 -}}
{{- else -}}{{- fail (printf "unknown unit %q in the duration %q" $unit $s) -}}
{{- end -}}
{{- $total = add $total (mul $n $mult) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* Seconds the sidecar may need after SIGTERM: in-flight requests + drain. */}}
{{- define "dynamiq-sidecar.shutdownSeconds" -}}
{{- $req := include "dynamiq-sidecar.durationMillis" (dig "ingest" "request_timeout" "30s" .v.config) | atoi -}}
{{- $drain := include "dynamiq-sidecar.durationMillis" (dig "shutdown" "drain_timeout" "10s" .v.config) | atoi -}}
{{- div (add $req $drain 999) 1000 -}}
{{- end -}}

{{- define "dynamiq-sidecar.terminationGracePeriodSecondsC" -}}
{{- $need := include "dynamiq-sidecar.shutdownSeconds" . | atoi -}}
{{- if kindIs "invalid" .v.terminationGracePeriodSeconds -}}
{{- add $need 10 -}}
{{- else -}}
{{- $set := int64 .v.terminationGracePeriodSeconds -}}
{{- if le $set (int64 $need) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than ingest.request_timeout + shutdown.drain_timeout (%d s): the kubelet would kill the sidecar before it has drained" $set $need) -}}
{{- end -}}
{{- $set -}}
{{- end -}}
{{- end -}}

{{/* Checks that make a release fail to render instead of a pod failing to start. */}}
{{- define "dynamiq-sidecar.validate" -}}
{{- $modes := list "sidecar" "daemonset" "gateway" -}}
{{- if not (has .v.mode $modes) -}}
{{- fail (printf "mode must be one of sidecar, daemonset, gateway (got %q)" .v.mode) -}}
{{- end -}}
{{- $_ := include "dynamiq-sidecar.image" . -}}
{{- $_ := include "dynamiq-sidecar.terminationGracePeriodSecondsC" . -}}
{{- if and (include "dynamiq-sidecar.needsKey" .) (not (or .v.accessKey.value .v.accessKey.existingSecret)) -}}
{{- fail "the Dynamiq access key is required: set accessKey.existingSecret (a Secret with the key under accessKey.existingSecretKey) or accessKey.value" -}}
{{- end -}}
{{- if include "dynamiq-sidecar.exposed" . -}}
{{- if not (or .v.ingestToken.value .v.ingestToken.existingSecret) -}}
{{- fail (printf "mode %q listens beyond loopback, so clients must authenticate: set ingestToken.existingSecret (a Secret with the token under ingestToken.existingSecretKey) or ingestToken.value" .v.mode) -}}
{{- end -}}
{{- if eq (dig "upstream" "auth_mode" "sidecar-key" .v.config) "passthrough" -}}
{{- fail (printf "config.upstream.auth_mode \"passthrough\" only works in sidecar mode: in mode %q clients send the inbound token, not a project key" .v.mode) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .v.mode "daemonset") (eq .v.daemonset.buffer.type "pvc") (not .v.daemonset.buffer.pvc.existingClaim) -}}
{{- fail "daemonset.buffer.type \"pvc\" needs daemonset.buffer.pvc.existingClaim (a ReadWriteMany claim)" -}}
{{- end -}}
{{- if and .v.serviceMonitor.enabled (eq .v.mode "sidecar") -}}
{{- fail "serviceMonitor is for the daemonset and gateway modes: in sidecar mode /metrics is on 127.0.0.1 inside your pods" -}}
{{- end -}}
{{- if and .v.serviceMonitor.enabled (eq .v.mode "daemonset") (not .v.daemonset.service.enabled) -}}
{{- fail "serviceMonitor needs daemonset.service.enabled (the ServiceMonitor selects that Service)" -}}
{{- end -}}
{{- if and .v.sidecarExample.enabled (ne .v.mode "sidecar") -}}
{{- fail "sidecarExample.enabled needs mode: sidecar" -}}
{{- end -}}
{{- if and (eq .v.mode "gateway") .v.gateway.autoscaling.enabled -}}
{{- if gt (int64 .v.gateway.autoscaling.minReplicas) (int64 .v.gateway.autoscaling.maxReplicas) -}}
{{- fail "gateway.autoscaling.minReplicas must not exceed maxReplicas" -}}
{{- end -}}
{{- if and (kindIs "invalid" .v.gateway.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" .v.gateway.autoscaling.targetMemoryUtilizationPercentage) -}}
{{- fail "gateway.autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* One TOML value. Numbers arrive as float64 from YAML files and int64 from --set. */}}
{{- define "dynamiq-sidecar.tomlValue" -}}
{{- if kindIs "bool" . -}}
{{- . -}}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- int64 . -}}
{{- else if kindIs "slice" . -}}
{{- /* A list of strings (e.g. ingest.allowed_hosts): a JSON array is a TOML array. */ -}}
{{- toJson . -}}
{{- else -}}
{{- toString . | toJson -}}
{{- end -}}
{{- end -}}

{{/* dynamiq-sidecar.toml: config values plus the keys the chart owns. */}}
{{- define "dynamiq-sidecar.configToml" -}}
{{- $cfg := deepCopy .v.config -}}
{{- range $section := list "ingest" "upstream" "buffer" "forward" "query" "shutdown" "log" -}}
{{- if not (hasKey $cfg $section) -}}{{- $_ := set $cfg $section dict -}}{{- end -}}
{{- end -}}
{{- $host := ternary "0.0.0.0" "127.0.0.1" (eq (include "dynamiq-sidecar.exposed" .) "true") -}}
{{- $_ := set $cfg.ingest "http_addr" (printf "%s:%d" $host (int64 .v.ports.http)) -}}
{{- $_ := set $cfg.ingest "grpc_addr" (printf "%s:%d" $host (int64 .v.ports.grpc)) -}}
{{- if include "dynamiq-sidecar.exposed" . -}}
{{- $_ := set $cfg.ingest "auth_token_file" (printf "%s/token" (include "dynamiq-sidecar.tokenDir" .)) -}}
{{- /* Clients name the Service (and, behind the gateway's headless Service, a pod): the Host
     check (DNS rebinding) must accept those names. IP literals (status.hostIP) always pass. */ -}}
{{- if not (hasKey $cfg.ingest "allowed_hosts") -}}
{{- $svc := include "dynamiq-sidecar.fullname" . -}}
{{- $ns := .root.Release.Namespace -}}
{{- $hosts := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- if eq .v.mode "gateway" -}}
{{- $hosts = concat $hosts (list (printf "*.%s-headless.%s.svc" $svc $ns) (printf "*.%s-headless.%s.svc.cluster.local" $svc $ns)) -}}
{{- end -}}
{{- $_ := set $cfg.ingest "allowed_hosts" $hosts -}}
{{- end -}}
{{- end -}}
{{- if include "dynamiq-sidecar.needsKey" . -}}
{{- $_ := set $cfg.upstream "access_key_file" (printf "%s/access-key" (include "dynamiq-sidecar.accessKeyDir" .)) -}}
{{- end -}}
{{- if include "dynamiq-sidecar.hasApiToken" . -}}
{{- $_ := set $cfg.query "api_token_file" (printf "%s/api-token" (include "dynamiq-sidecar.apiTokenDir" .)) -}}
{{- end -}}
{{- $_ := set $cfg.buffer "path" (include "dynamiq-sidecar.bufferPath" .) -}}
# Rendered by the dynamiq-sidecar Helm chart (mode: {{ .v.mode }}); every key is documented in
# config/dynamiq-sidecar.toml. Keys not listed take the binary's defaults.
{{- range $section := list "ingest" "upstream" "buffer" "forward" "query" "shutdown" "log" }}
{{- $keys := index $cfg $section }}
{{- if $keys }}

[{{ $section }}]
{{- range $k := keys $keys | sortAlpha }}
{{ $k }} = {{ include "dynamiq-sidecar.tomlValue" (index $keys $k) }}
{{- end }}
{{- end }}
{{- end }}
{{ end -}}

{{/* Probes. */}}
{{- define "dynamiq-sidecar.probeHandler" -}}
{{- $c := index . 0 -}}
{{- $path := index . 1 -}}
{{- $type := $c.v.probes.type -}}
{{- if eq $type "auto" -}}{{- $type = ternary "httpGet" "exec" (eq (include "dynamiq-sidecar.exposed" $c) "true") -}}{{- end -}}
{{- if eq $type "httpGet" -}}
httpGet:
  path: {{ $path }}
  port: {{ $c.v.ports.http }}
{{- else -}}
{{- /* The listener is on 127.0.0.1, which the kubelet's httpGet (to the pod IP) cannot reach. */ -}}
exec:
  command:
    - /bin/bash
    - -c
    - {{ printf "exec 3<>/dev/tcp/127.0.0.1/%d && printf 'GET %s HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r -t %d _ code _ <&3 && [ \"$code\" = 200 ]" (int64 $c.v.ports.http) $path (int64 4) | quote }}
{{- end -}}
{{- end -}}

{{- define "dynamiq-sidecar.probe" -}}
{{- $c := index . 0 -}}
{{- $p := index . 1 -}}
{{- $path := index . 2 -}}
{{- include "dynamiq-sidecar.probeHandler" (list $c $path) }}
initialDelaySeconds: {{ $p.initialDelaySeconds }}
periodSeconds: {{ $p.periodSeconds }}
timeoutSeconds: {{ $p.timeoutSeconds }}
failureThreshold: {{ $p.failureThreshold }}
{{- end -}}

{{/* The container (internal; takes the normalized context). */}}
{{- define "dynamiq-sidecar.containerC" -}}
{{- $c := . -}}
{{- $v := .v -}}
- name: dynamiq-sidecar
  image: {{ include "dynamiq-sidecar.image" $c | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if include "dynamiq-sidecar.nativeSidecarC" $c }}
  # A native sidecar: starts (and passes its startup probe) before the app containers and is
  # stopped after them, so it drains what they sent.
  restartPolicy: Always
  {{- end }}
  args:
    - run
    - --config
    - {{ include "dynamiq-sidecar.configPath" $c }}
  {{- if include "dynamiq-sidecar.exposed" $c }}
  ports:
    - name: http
      containerPort: {{ $v.ports.http }}
      protocol: TCP
      {{- if and (eq $v.mode "daemonset") $v.daemonset.hostPort }}
      hostPort: {{ $v.ports.http }}
      {{- end }}
    {{- if $v.ports.exposeGrpc }}
    - name: grpc
      containerPort: {{ $v.ports.grpc }}
      protocol: TCP
      {{- if and (eq $v.mode "daemonset") $v.daemonset.hostPort }}
      hostPort: {{ $v.ports.grpc }}
      {{- end }}
    {{- end }}
  {{- end }}
  {{- $pvc := and (eq $v.mode "daemonset") (eq $v.daemonset.buffer.type "pvc") }}
  {{- if or $pvc $v.extraEnv }}
  env:
    {{- if $pvc }}
    - name: NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  volumeMounts:
    - name: dynamiq-sidecar-config
      mountPath: {{ include "dynamiq-sidecar.configDir" $c }}
      readOnly: true
    {{- if include "dynamiq-sidecar.needsKey" $c }}
    # The whole Secret volume (not a subPath), so a rotated key reaches the file.
    - name: dynamiq-sidecar-access-key
      mountPath: {{ include "dynamiq-sidecar.accessKeyDir" $c }}
      readOnly: true
    {{- end }}
    {{- if include "dynamiq-sidecar.hasApiToken" $c }}
    - name: dynamiq-sidecar-api-token
      mountPath: {{ include "dynamiq-sidecar.apiTokenDir" $c }}
      readOnly: true
    {{- end }}
    {{- if include "dynamiq-sidecar.exposed" $c }}
    - name: dynamiq-sidecar-ingest-token
      mountPath: {{ include "dynamiq-sidecar.tokenDir" $c }}
      readOnly: true
    {{- end }}
    - name: dynamiq-sidecar-buffer
      mountPath: {{ include "dynamiq-sidecar.bufferMount" $c }}
      {{- if $pvc }}
      subPathExpr: $(NODE_NAME)
      {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if $v.probes.startup.enabled }}
  startupProbe:
    {{- include "dynamiq-sidecar.probe" (list $c $v.probes.startup "/healthz") | nindent 4 }}
  {{- end }}
  {{- if $v.probes.liveness.enabled }}
  livenessProbe:
    {{- include "dynamiq-sidecar.probe" (list $c $v.probes.liveness "/healthz") | nindent 4 }}
  {{- end }}
  {{- if $v.probes.readiness.enabled }}
  readinessProbe:
    {{- include "dynamiq-sidecar.probe" (list $c $v.probes.readiness "/readyz") | nindent 4 }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
{{- end -}}

{{- define "dynamiq-sidecar.nativeSidecarC" -}}
{{- if eq .v.mode "sidecar" -}}
{{- if eq .v.sidecar.nativeSidecar "always" -}}true
{{- else if and (eq .v.sidecar.nativeSidecar "auto") (semverCompare ">=1.29.0-0" .root.Capabilities.KubeVersion.Version) -}}true
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Volumes (internal). */}}
{{- define "dynamiq-sidecar.volumesC" -}}
{{- $c := . -}}
{{- $v := .v -}}
- name: dynamiq-sidecar-config
  configMap:
    name: {{ include "dynamiq-sidecar.fullname" $c }}
{{- if include "dynamiq-sidecar.needsKey" $c }}
- name: dynamiq-sidecar-access-key
  secret:
    secretName: {{ include "dynamiq-sidecar.accessKeySecretName" $c }}
    defaultMode: 292 # 0444: the sidecar's non-root user must read it whatever the pod's fsGroup
    items:
      - key: {{ include "dynamiq-sidecar.accessKeySecretKey" $c }}
        path: access-key
{{- end }}
{{- if include "dynamiq-sidecar.hasApiToken" $c }}
- name: dynamiq-sidecar-api-token
  secret:
    secretName: {{ include "dynamiq-sidecar.apiTokenSecretName" $c }}
    defaultMode: 292 # 0444
    items:
      - key: {{ include "dynamiq-sidecar.apiTokenSecretKey" $c }}
        path: api-token
{{- end }}
{{- if include "dynamiq-sidecar.exposed" $c }}
- name: dynamiq-sidecar-ingest-token
  secret:
    secretName: {{ include "dynamiq-sidecar.tokenSecretName" $c }}
    defaultMode: 292 # 0444
    items:
      - key: {{ include "dynamiq-sidecar.tokenSecretKey" $c }}
        path: token
{{- end }}
{{- if eq $v.mode "sidecar" }}
- name: dynamiq-sidecar-buffer
  emptyDir:
    sizeLimit: {{ $v.sidecar.buffer.sizeLimit }}
{{- else if eq $v.mode "daemonset" }}
- name: dynamiq-sidecar-buffer
  {{- if eq $v.daemonset.buffer.type "hostPath" }}
  hostPath:
    path: {{ include "dynamiq-sidecar.hostPath" $c }}
    type: DirectoryOrCreate
  {{- else if eq $v.daemonset.buffer.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ $v.daemonset.buffer.pvc.existingClaim }}
  {{- else }}
  emptyDir:
    sizeLimit: {{ $v.daemonset.buffer.emptyDir.sizeLimit }}
  {{- end }}
{{- else if and (eq $v.mode "gateway") (not $v.gateway.persistence.enabled) }}
- name: dynamiq-sidecar-buffer
  emptyDir: {}
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "dynamiq-sidecar.hostPath" -}}
{{- default (printf "/var/lib/dynamiq-sidecar/%s-%s" .root.Release.Namespace (include "dynamiq-sidecar.fullname" .)) .v.daemonset.buffer.hostPath.path -}}
{{- end -}}

{{- define "dynamiq-sidecar.podAnnotationsC" -}}
checksum/config: {{ include "dynamiq-sidecar.configToml" . | sha256sum }}
{{- if and (include "dynamiq-sidecar.exposed" .) (not .v.ingestToken.existingSecret) .v.ingestToken.value }}
checksum/ingest-token: {{ .v.ingestToken.value | sha256sum }}
{{- end }}
{{- end -}}

{{/* ---- public entry points ---- */}}

{{- define "dynamiq-sidecar.container" -}}
{{- $c := dict -}}{{- $_ := include "dynamiq-sidecar.normalize" (list . $c) -}}
{{- include "dynamiq-sidecar.containerC" $c -}}
{{- end -}}

{{- define "dynamiq-sidecar.initContainers" -}}
{{- $c := dict -}}{{- $_ := include "dynamiq-sidecar.normalize" (list . $c) -}}
{{- if include "dynamiq-sidecar.nativeSidecarC" $c -}}
{{- include "dynamiq-sidecar.containerC" $c -}}
{{- end -}}
{{- end -}}

{{- define "dynamiq-sidecar.containers" -}}
{{- $c := dict -}}{{- $_ := include "dynamiq-sidecar.normalize" (list . $c) -}}
{{- if not (include "dynamiq-sidecar.nativeSidecarC" $c) -}}
{{- include "dynamiq-sidecar.containerC" $c -}}
{{- end -}}
{{- end -}}

{{- define "dynamiq-sidecar.volumes" -}}
{{- $c := dict -}}{{- $_ := include "dynamiq-sidecar.normalize" (list . $c) -}}
{{- include "dynamiq-sidecar.volumesC" $c -}}
{{- end -}}

{{- define "dynamiq-sidecar.podAnnotations" -}}
{{- $c := dict -}}{{- $_ := include "dynamiq-sidecar.normalize" (list . $c) -}}
{{- include "dynamiq-sidecar.podAnnotationsC" $c -}}
{{- end -}}

{{- define "dynamiq-sidecar.terminationGracePeriodSeconds" -}}
{{- $c := dict -}}{{- $_ := include "dynamiq-sidecar.normalize" (list . $c) -}}
{{- include "dynamiq-sidecar.terminationGracePeriodSecondsC" $c -}}
{{- end -}}

{{- define "dynamiq-sidecar.nativeSidecar" -}}
{{- $c := dict -}}{{- $_ := include "dynamiq-sidecar.normalize" (list . $c) -}}
{{- include "dynamiq-sidecar.nativeSidecarC" $c -}}
{{- end -}}
