#!/usr/bin/env python3
"""Turns the RESULT lines of scripts/bench-vs-mosquitto.sh into a markdown
table: one column per target (Mosquitto first, then each sotto target in the
order they ran), and each sotto target's ratio to Mosquitto."""
import sys


def parse(path):
    runs = []
    for line in open(path):
        if line.startswith("RESULT "):
            runs.append(dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv))
    return runs


def pick(runs, label, scenario, rated):
    """The first run of `label` and `scenario`; for relay, `rated` is False
    (saturation) or the n-th rated run (1, 2, ...)."""
    n = 0
    for r in runs:
        if r.get("label") == label and r.get("scenario") == scenario:
            if scenario != "relay" or (not rated and r.get("rate", "0") == "0"):
                return r
            if rated and r.get("rate", "0") != "0":
                n += 1
                if n == rated:
                    return r
    return {}


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def ratio(base, v):
    a, b = num(base), num(v)
    return f"{b / a:.2f}x" if a and b is not None else "n/a"


class Table:
    def __init__(self, runs, labels):
        self.runs, self.labels = runs, labels
        self.sotto = [l for l in labels if l != "mosquitto"]
        head = ["scenario, figure"] + labels + [f"{l} / Mosquitto" for l in self.sotto]
        self.out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pick(self, scenario, rated=False):
        return [pick(self.runs, l, scenario, rated) for l in self.labels]

    def row(self, name, rs, key, better="higher", keys=None):
        """`keys`: per-label key (Mosquitto and sotto name some figures
        differently)."""
        vals = [r.get((keys or {}).get(l, key), "n/a") for r, l in zip(rs, self.labels)]
        base = vals[0]
        ratios = [f"{ratio(base, v)}" for v in vals[1:]]
        if better:
            name = f"{name} ({better} is better)"
        self.out.append("| " + " | ".join([name] + vals + ratios) + " |")

    def text(self, name, vals):
        self.out.append("| " + " | ".join([name] + vals + [""] * len(self.sotto)) + " |")

    def per_message(self, name, rs, cpu_keys, rate_key):
        vals = []
        for r, l in zip(rs, self.labels):
            cpu, rate = num(r.get(cpu_keys[l == "mosquitto"])), num(r.get(rate_key))
            vals.append(f"{cpu / rate * 1e6:.1f}" if cpu is not None and rate else "n/a")
        ratios = [ratio(vals[0], v) for v in vals[1:]]
        self.out.append("| " + " | ".join([f"{name} (lower is better)"] + vals + ratios) + " |")


def lost_dup(rs):
    return [f"{r.get('lost')} / {r.get('dup')}" for r in rs]


def main():
    runs = parse(sys.argv[1] if len(sys.argv) > 1 else "target/bench-vs-mosquitto/results.txt")
    labels = ["mosquitto"]
    for r in runs:
        if r.get("label") and r["label"] not in labels:
            labels.append(r["label"])
    t = Table(runs, labels)
    cpu = {l: ("broker_cpu" if l == "mosquitto" else "server_cpu") for l in labels}
    rs = t.pick("relay")
    t.row("relay saturation: delivered msgs/s", rs, "msgs_per_s")
    t.row("relay saturation: p50 ms", rs, "p50_ms", "lower")
    t.row("relay saturation: p99 ms", rs, "p99_ms", "lower")
    t.row("relay saturation: server CPU, cores", rs, "server_cpu", None, cpu)
    t.per_message("relay saturation: server CPU per message, us", rs, ("server_cpu", "broker_cpu"), "msgs_per_s")
    t.text("relay saturation: lost / dup", lost_dup(rs))
    for nth in (1, 2):
        rs = t.pick("relay", nth)
        if not any(rs):
            continue
        rate = next((r["rate"] for r in rs if r.get("rate")), "?")
        t.row(f"relay at {rate} msgs/s: delivered msgs/s", rs, "msgs_per_s")
        t.row(f"relay at {rate} msgs/s: p50 ms", rs, "p50_ms", "lower")
        t.row(f"relay at {rate} msgs/s: p99 ms", rs, "p99_ms", "lower")
        t.row(f"relay at {rate} msgs/s: max ms", rs, "max_ms", "lower")
        t.text(f"relay at {rate} msgs/s: lost / dup", lost_dup(rs))
    rs = t.pick("offline")
    t.row("offline: publish msgs/s (queued)", rs, "publish_msgs_per_s")
    t.row("offline: drain msgs/s", rs, "msgs_per_s")
    t.row("offline: drain s", rs, "secs", "lower")
    pub_cpu = {l: ("broker_cpu_publish" if l == "mosquitto" else "server_cpu_publish") for l in labels}
    t.row("offline publish: server CPU, cores", rs, "server_cpu_publish", None, pub_cpu)
    t.per_message("offline publish: server CPU per message, us", rs,
                  ("server_cpu_publish", "broker_cpu_publish"), "publish_msgs_per_s")
    t.text("offline: lost / dup", lost_dup(rs))
    rs = t.pick("idle")
    t.text("idle: connections up", [f"{r.get('C')} ({r.get('all_connected')})" for r in rs])
    t.row("idle: server RSS while holding, kB", rs, "rss_hold_kb", "lower")
    t.row("idle: RSS per connection, kB", rs, "kb_per_client", "lower")
    idle_cpu = {l: ("broker_cpu_idle" if l == "mosquitto" else "server_cpu_idle") for l in labels}
    t.text("idle: server CPU while holding, cores",
           [r.get(idle_cpu[l], "n/a") for r, l in zip(rs, labels)])
    print("\n".join(t.out))


if __name__ == "__main__":
    main()
