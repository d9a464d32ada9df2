#!/bin/sh
# mxlab on a lab host: the small supervisor the playbooks run.
#   hostctl.sh ACTION LAB [ARG] -- NODE...   (NODE: name:role:address)
# Each node lives in ./NAME beside this script. Nodes run as transient systemd units
# where systemd runs, else as detached processes (own session) with a pid file.
set -u
cd "$(dirname "$0")" || exit 1
action=$1 lab=$2 arg=$3
shift 4 # the "--"
root=$(pwd)
venv=/var/lib/mxlab/.venv-$(cat .wheels/KEY 2>/dev/null)
systemd=false
[ -d /run/systemd/system ] && systemd=true

alive() { # the node in folder $1 runs (a zombie does not)
	if $systemd; then systemctl is-active --quiet "mxlab-$lab-$1"; return; fi
	[ -f "$1/pid" ] || return 1
	s=$(ps -o stat= -p "$(cat "$1/pid")") && [ -n "$s" ] && [ "${s#Z}" = "$s" ]
}

start() { # $1 name, $2 role
	alive "$1" && return 0
	if $systemd; then
		systemd-run --quiet --unit "mxlab-$lab-$1" --working-directory "$root/$1" \
			-p "StandardOutput=append:$root/$1/node.log" -p StandardError=inherit \
			-E PYTHONUNBUFFERED=1 "$venv/bin/python" -m mxlab.nodes "$2" --config config.json
		return
	fi
	(cd "$1" && PYTHONUNBUFFERED=1 setsid "$venv/bin/python" -m mxlab.nodes "$2" \
		--config config.json >>node.log 2>&1 </dev/null & echo $! >"$1/pid")
}

stop() { # $1 name, $2 signal for the first try
	if $systemd; then systemctl stop "mxlab-$lab-$1" 2>/dev/null; return 0; fi
	alive "$1" || { rm -f "$1/pid"; return 0; }
	kill "-$2" "$(cat "$1/pid")"
	for _ in $(seq 100); do alive "$1" || break; sleep 0.1; done
	alive "$1" && kill -KILL "$(cat "$1/pid")"
	rm -f "$1/pid"
}

install() { # the node package, once per wheelhouse, into a venv kept for the next lab
	[ -x "$venv/bin/python" ] && return 0
	rm -rf "$venv.new" && python3 -m venv "$venv.new" &&
		"$venv.new/bin/pip" install -q --no-index --find-links .wheels mxlab-node &&
		mv "$venv.new" "$venv"
}

status=0
[ "$action" = deploy ] && { install || exit 1; }
for node in "$@"; do
	name=${node%%:*} rest=${node#*:}
	role=${rest%%:*} address=${rest#*:}
	case $action in
	deploy)
		dev=${MXLAB_INTERFACE:-$(ip -o route get "$address" | sed -n 's/.* dev \([^ ]*\).*/\1/p')}
		ip address replace "$address/32" dev "$dev" || status=1
		start "$name" "$role" || status=1 ;;
	start) start "$name" "$role" || status=1 ;;
	stop) stop "$name" TERM ;;
	signal)
		if $systemd; then systemctl kill --kill-whom=main -s "$arg" "mxlab-$lab-$name"
		else alive "$name" && kill "-$arg" "$(cat "$name/pid")"; fi ;;
	status) alive "$name" && echo "$name running" || echo "$name stopped" ;;
	log) cat "$name/node.log" 2>/dev/null ;;
	exec) cd "$name" && exec sh -c "$arg" ;;
	down)
		stop "$name" TERM
		dev=$(ip -o address show to "$address/32" | awk '{print $2; exit}')
		[ -n "$dev" ] && ip address del "$address/32" dev "$dev" ;;
	esac
done
[ "$action" = down ] && rm -rf "$root"
exit $status
