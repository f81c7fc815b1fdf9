#!/usr/bin/env bash
# Points the live Service xgbops-api at one track of k8s/blue-green: blue or green.
#
#   k8s/blue-green/switch.sh green
#
# 1. Waits until the track's Deployment is rolled out (its pods ready), so the Service never
#    selects pods that cannot answer; a track that does not get there stops the switch.
# 2. Patches the Service's selector, its track only: the endpoints follow within seconds, and
#    requests already on the other track finish there (its pods keep running).
# 3. Writes the track into service.yaml beside this script, so that the next
#    `kubectl apply -k k8s/blue-green` keeps it: commit that change.
# Switching back is the same command with the other track. KUBECTL names the client (default
# kubectl; the namespace is the current context's), TIMEOUT the wait of step 1 (default 300s).
set -euo pipefail

track="${1:-}"
case "$track" in
    blue | green) ;;
    *)
        echo "usage: $0 blue|green" >&2
        exit 2
        ;;
esac
kubectl="${KUBECTL:-kubectl}"
service_file="$(cd "$(dirname "$0")" && pwd)/service.yaml"

"$kubectl" rollout status "deployment/xgbops-api-$track" --timeout="${TIMEOUT:-300s}"
"$kubectl" patch service xgbops-api --type=merge \
    -p "{\"spec\":{\"selector\":{\"track\":\"$track\"}}}"
# The selector's track line (the only `track:` of the file); a temporary copy, not `sed -i`,
# whose syntax differs between GNU and BSD sed.
sed "s/^\(    track: \).*/\1$track/" "$service_file" >"$service_file.tmp"
mv "$service_file.tmp" "$service_file"
echo "Service xgbops-api now selects track $track; $service_file says so too (commit it)."
