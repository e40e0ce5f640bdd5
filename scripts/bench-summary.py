#!/usr/bin/env python3
"""Turns the RESULT lines of scripts/bench-vs-mosquitto.sh into a markdown
table: Mosquitto and sotto side by side, and the ratio sotto / Mosquitto."""
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


def row(name, m, s, key, unit="", better="higher"):
    a, b = num(m.get(key)), num(s.get(key))
    ratio = f"{b / a:.2f}x" if a and b is not None else "n/a"
    fa = m.get(key, "n/a")
    fb = s.get(key, "n/a")
    return f"| {name} | {fa}{unit} | {fb}{unit} | {ratio} ({better} is better) |"


def cpu_rows(name, m, s, mkey="broker_cpu", skey="server_cpu", rate_key="msgs_per_s"):
    a, b = num(m.get(mkey)), num(s.get(skey))
    ratio = f"{b / a:.2f}x" if a and b is not None else "n/a"
    rows = [f"| {name}: server CPU, cores | {m.get(mkey, 'n/a')} | {s.get(skey, 'n/a')} | {ratio} |"]
    ra, rb = num(m.get(rate_key)), num(s.get(rate_key))
    if a is not None and b is not None and ra and rb:
        pa, pb = a / ra * 1e6, b / rb * 1e6
        rows.append(f"| {name}: server CPU per message, us | {pa:.1f} | {pb:.1f} | {pb / pa:.1f}x (lower is better) |")
    return rows


def main():
    runs = parse(sys.argv[1] if len(sys.argv) > 1 else "target/bench-vs-mosquitto/results.txt")
    out = ["| scenario, figure | Mosquitto | sotto | sotto / Mosquitto |", "|---|---|---|---|"]
    m, s = pick(runs, "mosquitto", "relay", False), pick(runs, "sotto", "relay", False)
    out.append(row("relay saturation: delivered msgs/s", m, s, "msgs_per_s"))
    out.append(row("relay saturation: p50 ms", m, s, "p50_ms", better="lower"))
    out.append(row("relay saturation: p99 ms", m, s, "p99_ms", better="lower"))
    out += cpu_rows("relay saturation", m, s)
    out.append(f"| relay saturation: lost / dup | {m.get('lost')} / {m.get('dup')} | {s.get('lost')} / {s.get('dup')} | |")
    for nth in (1, 2):
        m, s = pick(runs, "mosquitto", "relay", nth), pick(runs, "sotto", "relay", nth)
        if not m and not s:
            continue
        rate = m.get("rate", s.get("rate", "?"))
        out.append(row(f"relay at {rate} msgs/s: delivered msgs/s", m, s, "msgs_per_s"))
        out.append(row(f"relay at {rate} msgs/s: p50 ms", m, s, "p50_ms", better="lower"))
        out.append(row(f"relay at {rate} msgs/s: p99 ms", m, s, "p99_ms", better="lower"))
        out.append(row(f"relay at {rate} msgs/s: max ms", m, s, "max_ms", better="lower"))
        out.append(f"| relay at {rate} msgs/s: lost / dup | {m.get('lost')} / {m.get('dup')} | {s.get('lost')} / {s.get('dup')} | |")
    m, s = pick(runs, "mosquitto", "offline", False), pick(runs, "sotto", "offline", False)
    out.append(row("offline: publish msgs/s (queued)", m, s, "publish_msgs_per_s"))
    out.append(row("offline: drain msgs/s", m, s, "msgs_per_s"))
    out.append(row("offline: drain s", m, s, "secs", better="lower"))
    out += cpu_rows("offline publish", m, s, "broker_cpu_publish", "server_cpu_publish", "publish_msgs_per_s")
    out.append(f"| offline: lost / dup | {m.get('lost')} / {m.get('dup')} | {s.get('lost')} / {s.get('dup')} | |")
    m, s = pick(runs, "mosquitto", "idle", False), pick(runs, "sotto", "idle", False)
    out.append(f"| idle: connections up | {m.get('C')} ({m.get('all_connected')}) | {s.get('C')} ({s.get('all_connected')}) | |")
    out.append(row("idle: server RSS while holding, kB", m, s, "rss_hold_kb", better="lower"))
    out.append(row("idle: RSS per connection, kB", m, s, "kb_per_client", better="lower"))
    cpu_m, cpu_s = m.get("broker_cpu_idle", "n/a"), s.get("server_cpu_idle", "n/a")
    out.append(f"| idle: server CPU while holding, cores | {cpu_m} | {cpu_s} | |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
