#!/bin/sh
# Example config script: proves the node can reach rackboot and run code.
echo "configuring {{ node.hostname }} ({{ node.mac }}) on $(uname -m)"
ip -4 addr show
