#!/bin/sh
# rackboot-selector: role=builder
#
# Example of a script assigned by labels rather than by a bootenv: every node labelled
# role=builder runs it after the scripts its bootenv lists (selected scripts run in file name
# order, hence the number). Templates see the node's labels and params.
set -eu
echo "builder {{ node.hostname }} in rack {{ node.labels.rack | default('unknown') }}"
echo "parallel jobs: {{ params.jobs | default('auto') }}"
