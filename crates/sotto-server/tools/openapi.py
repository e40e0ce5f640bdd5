#!/usr/bin/env python3
"""Writes src/api/openapi.json. Edit this file, run it, commit both:
the document is hand-written, this only saves typing braces."""
import json, pathlib

def ref(name): return {"$ref": f"#/components/schemas/{name}"}
def js(name): return {"content": {"application/json": {"schema": ref(name)}}}
EMPTY = {"content": {"application/json": {"schema": {"type": "object"}}}}
def err(desc): return {"description": desc, **js("ErrorBody")}
RETRY = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}
def limited(what): return {"429": {**err(f"`rate_limited`: too many {what}; retry after `Retry-After` seconds"), "headers": RETRY}}
REPLAYED = "`replayed`: this signed request was already used (state-changing requests are single-use; sign a new one)"
SIGNED = [{"deviceSignature": []}]
COMMON = {"400": err("malformed request or body (`bad_request`)"),
          "401": err("missing or bad signature, stale time, unregistered device (`unauthorized`)"),
          "413": err("body over the limit (`too_large`)")}

def op(summary, ok, ok_desc="OK", body=None, auth=True, extra=None, params=None):
    o = {"summary": summary, "responses": {"200": {"description": ok_desc, **(ok or {})}, **COMMON, **(extra or {})}}
    if body: o["requestBody"] = {"required": True, **body}
    o["security"] = SIGNED if auth else []
    if params: o["parameters"] = params
    return o

def path_param(name, desc): return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": desc}
UH = path_param("username_hash", "hex SHA-256(\"sotto/v1/username\\0\" || lowercase(name))")
LINK = path_param("link_id", "link id from POST /v1/link")

s = lambda t, **kw: {"type": t, **kw}
b64 = s("string", format="byte")
hexs = s("string", pattern="^[0-9a-f]{64}$")
schemas = {
  "ErrorBody": s("object", required=["error", "code"], properties={"error": s("string"), "code": s("string", enum=[
      "bad_request", "unauthorized", "unknown_user", "unknown_device", "username_taken",
      "already_registered", "too_large", "not_found", "internal", "rate_limited", "mailbox_full",
      "replayed", "prekey_reused", "timeout", "unavailable"])}),
  "Clock": s("object", required=["now_ms"], properties={"now_ms": s("integer", format="int64")}),
  "RegisterRequest": s("object", required=["username_hash", "cert", "prekeys", "reserve"], properties={
      "username_hash": hexs, "cert": b64, "prekeys": s("array", items=b64), "reserve": b64}),
  "UserDevices": s("object", required=["user", "devices"], properties={"user": hexs, "devices": s("array", items=b64)}),
  "ClaimRequest": s("object", properties={"devices": s("array", items=hexs)}),
  "Bundle": s("object", required=["cert", "prekey"], properties={"cert": b64, "prekey": b64}),
  "ClaimResponse": s("object", required=["user", "bundles"], properties={"user": hexs, "bundles": s("array", items=ref("Bundle"))}),
  "PrekeyUpload": s("object", required=["prekeys"], properties={"prekeys": s("array", items=b64), "reserve": b64}),
  "PrekeyStatus": s("object", required=["one_time", "reserve_served"], properties={"one_time": s("integer"), "reserve_served": s("integer")}),
  "SendResponse": s("object", required=["datagram_id", "delivered_to"], properties={"datagram_id": hexs, "delivered_to": s("integer")}),
  "MailboxItem": s("object", required=["seq", "datagram", "received_at"], properties={
      "seq": s("integer", format="int64"), "datagram": b64, "received_at": s("integer", format="int64")}),
  "MailboxBatch": s("object", required=["items", "more"], properties={"items": s("array", items=ref("MailboxItem")), "more": s("boolean")}),
  "Ack": s("object", required=["seqs"], properties={"seqs": s("array", items=s("integer", format="int64"))}),
  "Push": {"oneOf": [
      s("object", required=["type", "seq", "datagram", "received_at"], properties={"type": s("string", enum=["message"]),
        "seq": s("integer"), "datagram": b64, "received_at": s("integer")}),
      s("object", required=["type", "seq", "datagram_id", "size", "received_at"], properties={"type": s("string", enum=["notice"]),
        "seq": s("integer"), "datagram_id": hexs, "size": s("integer"), "received_at": s("integer")}),
      s("object", required=["type", "one_time", "reserve_served"], properties={"type": s("string", enum=["prekeys_low"]),
        "one_time": s("integer"), "reserve_served": s("integer")})]},
  "LinkRequest": s("object", required=["device", "dh", "prekeys", "reserve"], properties={
      "device": hexs, "dh": hexs, "prekeys": s("array", items=b64), "reserve": b64}),
  "LinkCreated": s("object", required=["link_id"], properties={"link_id": s("string")}),
  "LinkStatus": s("object", required=["approved"], properties={"approved": s("boolean"), "cert": b64, "username_hash": hexs}),
  "LinkApprove": s("object", required=["cert"], properties={"cert": b64}),
  "Block": s("object", required=["username_hash"], properties={"username_hash": hexs}),
  "Blocks": s("object", required=["blocked"], properties={"blocked": s("array", items=hexs)}),
  "RemoveDevice": s("object", required=["time_ms", "signature"], properties={
      "time_ms": s("integer", format="int64", description="ms since the epoch, within 5 minutes of the server clock"),
      "signature": s("string", format="byte", description="Ed25519 signature by the user key over \"sotto/v1/remove-device\" || 0x01 || device id || time_ms (u64 big-endian)")}),
}

paths = {
  "/v1/clock": {"get": op("Master clock", js("Clock"), auth=False)},
  "/v1/register": {"post": op("Register a new user with its first device (signed by that device)", EMPTY, body=js("RegisterRequest"),
      extra={"409": err("`username_taken`, or `already_registered` for a known user key or device"),
             **limited("registrations and link requests from this address")})},
  "/v1/users/{username_hash}": {"get": op("A user's key and device certificates", js("UserDevices"), params=[UH],
      extra={"404": err("`unknown_user`"), **limited("lookups from this device or address")})},
  "/v1/devices": {"get": op("The caller's own user and devices", js("UserDevices"))},
  "/v1/devices/{device_id}": {"delete": op(
      "Remove a device of the caller's user (lost or stolen): it leaves the directory, its requests are refused, its mailbox and prekeys are deleted. "
      "The body carries the user key's signature: only the device holding the user key can remove devices",
      EMPTY, body=js("RemoveDevice"), params=[path_param("device_id", "hex device id")],
      extra={"403": err("the body is not signed by the caller's user key (`unauthorized`)"),
             "404": err("`unknown_device`: not a device of the caller's user")})},
  "/v1/users/{username_hash}/bundles": {"post": op(
      "Claim one prekey per device: a one-time key (served once, then deleted) or the reserve when the pool is empty; the owner is pushed prekeys_low. "
      "A claimant the user blocks gets the reserve keys, uncounted, and is not told",
      js("ClaimResponse"), body=js("ClaimRequest"), params=[UH], extra={
      "404": err("`unknown_user` or `unknown_device`"),
      **limited("claims from this device, of this user by this device, or from this address")})},
  "/v1/prekeys": {
      "get": op("The caller's prekey pool", js("PrekeyStatus")),
      "post": op("Refill the caller's pool (at most 1000 one-time prekeys per call; every id above every id the device published before)",
          js("PrekeyStatus"), body=js("PrekeyUpload"),
          extra={"409": err("`prekey_reused`: an id published before (a served key is never published again); or " + REPLAYED)})},
  "/v1/messages": {"post": op(
      "Send a datagram (at most the server's limit, by default the protocol's maximum of about 18 MB); answered once it is durable in every "
      "recipient device's mailbox. Recipients whose user blocks the sender get nothing, and the sender is not told",
      js("SendResponse"), body={"content": {"application/octet-stream": {"schema": s("string", format="binary")}}},
      extra={"403": err("`unauthorized`: the datagram's sender is not the caller"),
             "404": err("`unknown_device`: a recipient device is not registered (nothing stored)"),
             "409": err("`mailbox_full`: a recipient device, or its user's devices together, hold as many unacknowledged bytes as the server "
                        "allows (nothing stored; send again later); or " + REPLAYED),
             "413": err("`too_large`: the datagram is over the server's limit")})},
  "/v1/mailbox": {"get": op("Pending (unacknowledged) items after `after`", js("MailboxBatch"), params=[
      {"name": "after", "in": "query", "schema": s("integer", format="int64", default=0)},
      {"name": "limit", "in": "query", "schema": s("integer", default=100, maximum=500)}])},
  "/v1/mailbox/ack": {"post": op("Acknowledge items: deleted, or kept for the retention window", EMPTY, body=js("Ack"))},
  "/v1/datagrams/{datagram_id}": {"get": op("A datagram still stored (pending or within retention) that was addressed to a device of the caller's user (room history recovery)",
      {"content": {"application/octet-stream": {"schema": s("string", format="binary")}}},
      params=[path_param("datagram_id", "hex SHA-256 of the datagram")], extra={"404": err("`not_found`")})},
  "/v1/ws": {"get": op("WebSocket (the upgrade is single-use): server sends Push text frames (datagrams over the inline limit, 64 KiB by default, "
      "as `notice` frames to fetch over HTTP), the device may send Ack text frames; anything else closes the socket. A socket whose queue "
      "passes 1 MiB, or that stops reading for 10 s, is closed; a device holds at most 4 (a new one closes its oldest)",
      None, ok_desc="not used: the answer is 101 Switching Protocols", extra={"101": {"description": "upgraded; frames are Push (server) and Ack (device)", **js("Push")},
      "409": err(REPLAYED),
      "503": {**err("`unavailable`: the server holds as many WebSockets as it allows; retry after `Retry-After` seconds, or fetch over HTTP"), "headers": RETRY}})},
  "/v1/link": {"post": op("A new device asks to join a user (signed by the new device); waits 10 minutes", js("LinkCreated"), body=js("LinkRequest"),
      extra={"409": err("`already_registered`: the device is registered"), **limited("registrations and link requests from this address")})},
  "/v1/link/{link_id}": {"get": op("An existing device reads a pending link request", js("LinkRequest"), params=[LINK],
      extra={"404": err("`not_found`"), **limited("link reads and approvals from this device")})},
  "/v1/link/{link_id}/approve": {"post": op("Approve with a certificate signed by the user key; registers the device and its prekeys", EMPTY,
      body=js("LinkApprove"), params=[LINK], extra={"403": err("the certificate's user is not the caller's"), "404": err("`not_found`"),
      "409": err("`already_registered`"), **limited("link reads and approvals from this device")})},
  "/v1/link/{link_id}/status": {"get": op("Polled by the new device", js("LinkStatus"), params=[LINK], auth=False,
      extra={"404": err("`not_found`"), **limited("status polls from this address")})},
  "/v1/blocks": {
      "get": op("The caller's user's block list", js("Blocks")),
      "post": op("Block a user", EMPTY, body=js("Block"), extra={"404": err("`unknown_user`")})},
  "/v1/blocks/{username_hash}": {"delete": op("Unblock a user", EMPTY, params=[UH], extra={"404": err("`unknown_user`")})},
  "/openapi.json": {"get": op("This document", {"content": {"application/json": {"schema": {"type": "object"}}}}, auth=False)},
  "/metrics": {"get": op("This node's counters (Prometheus/OpenMetrics text: connections, push sockets, sends, pushes, acks, mailbox depth, store latency, rate-limit refusals); aggregates only", {"content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}, auth=False)},
}

# Every state-changing request is single-use, and a body that stops
# arriving is cut.
for path, ops in paths.items():
    for method, o in ops.items():
        r = o["responses"]
        if method != "get":
            r.setdefault("409", err(REPLAYED))
            if not r["409"]["description"].endswith(REPLAYED):
                r["409"] = err(r["409"]["description"] + "; or " + REPLAYED)
        if "requestBody" in o:
            r["408"] = err("`timeout`: the body stopped arriving for the read timeout (10 s by default); the connection is closed")


# Delivery to phone numbers (docs/api.md, "Sender API", "Phone numbers").
SENDER = [{"senderKey": []}]
def sender_op(summary, ok_code, ok, extra, body=None, params=None):
    o = {"summary": summary, "security": SENDER, "responses": {ok_code: ok,
         "401": err("missing, unknown or revoked API key (`unauthorized`); the body is not read"), **limited("calls with this key or from this address"), **extra}}
    if body: o["requestBody"] = {"required": True, **body}
    if params: o["parameters"] = params
    return o
paths["/v1/sender/messages"] = {"post": sender_op(
    "Send a message to a phone number: sealed at once to its devices (`sent`) or held under the hold key until the number registers (`held`; the number gets one SMS per sender)",
    "202", {"description": "accepted", **js("SenderMessageCreated")},
    {"400": err("malformed JSON, an unknown field, a number not in E.164 form, an empty body, a bad ttl (`bad_request`)"),
     "413": err("a body over 16 KiB, or a request over 1 MiB (`too_large`)"),
     "408": err("`timeout`: the body stopped arriving")}, body=js("SenderMessage"))}
paths["/v1/sender/messages/{id}"] = {"get": sender_op(
    "A message's status: held, sent, delivered (a device acknowledged it) or expired", "200",
    {"description": "OK", **js("SenderMessageState")}, {"404": err("no such message of this sender (`not_found`)")},
    params=[path_param("id", "the id POST /v1/sender/messages returned")])}
OTP_401 = "`otp_wrong` (the message says how many attempts are left), `otp_expired`, `otp_used`, `otp_missing`; or a bad signature (`unauthorized`)"
paths["/v1/phone/register"] = {"post": {"summary": "Ask to register a phone number: without `otp` the server texts a 6-digit code; with `otp` (made by the app) the answer names the SMS the handset must send",
    "security": [], "requestBody": {"required": True, **js("PhoneStart")},
    "responses": {"200": {"description": "OK", **js("PhoneStarted")}, "400": err("a number not in E.164 form, a bad otp (`bad_request`)"),
        **limited("code requests for this number (3, then one a minute) or from this address"),
        "503": err("no SMS gateway configured (`unavailable`)")}}}
paths["/v1/phone/verify"] = {"post": {"summary": "Check the code and register a new user for the number (signed by its first device); messages held for the number are then sealed to it",
    "security": SIGNED, "requestBody": {"required": True, **js("PhoneVerify")},
    "responses": {"200": {"description": "OK", **js("PhoneVerified")}, "400": err("malformed body (`bad_request`)"), "401": err(OTP_401),
        "409": err("`sms_pending`: the handset's SMS has not arrived yet (app-made code: poll again); `username_taken`, `already_registered`; or " + REPLAYED),
        "429": err("`otp_attempts`: 5 wrong attempts on this code, ask for a new one; or `rate_limited`")}}}
paths["/v1/sms/inbound"] = {"post": {"summary": "An SMS the gateway received, in the provider's webhook form (From, Body). With a real provider the X-Twilio-Signature is checked and an unsigned or mis-signed request refused; with the development sink it is accepted unsigned",
    "security": [], "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": s("object", required=["From", "Body"], properties={"From": s("string"), "Body": s("string")})}}},
    "responses": {"200": {"description": "`{\"matched\": bool}`: whether it confirmed an app-made code", **EMPTY},
        "400": err("From or Body missing, From not in E.164 form (`bad_request`)"), "403": err("missing or wrong provider signature (`unauthorized`)"),
        "404": err("no SMS gateway configured (`not_found`)"), **limited("inbound SMS from this address")}}}
paths["/openapi.json"] = paths.pop("/openapi.json")
E164 = s("string", pattern="^\\+[1-9][0-9]{7,14}$", description="E.164: + and 8 to 15 digits")
schemas.update({
  "SenderMessage": s("object", required=["to", "body"], additionalProperties=False, properties={"to": E164,
      "body": s("string", maxLength=16384, description="UTF-8 text, at most 16 KiB"),
      "ttl": s("integer", description="seconds the message may be held (default 604800, 7 days; at most 30 days)")}),
  "SenderMessageCreated": s("object", required=["id", "status"], properties={"id": s("string"), "status": s("string", enum=["held", "sent"])}),
  "SenderMessageState": s("object", required=["id", "status", "created_at", "expires_at", "updated_at"], properties={"id": s("string"),
      "status": s("string", enum=["held", "sent", "delivered", "expired"]), "created_at": s("integer", format="int64"),
      "expires_at": s("integer", format="int64"), "updated_at": s("integer", format="int64")}),
  "PhoneStart": s("object", required=["number"], additionalProperties=False, properties={"number": E164,
      "otp": s("string", pattern="^[0-9]{6,10}$", description="app-made code (`--by-sms`)")}),
  "PhoneStarted": s("object", required=["expires_in"], properties={"expires_in": s("integer"),
      "sms_to": s("string", description="app-made code: the number the handset texts"), "sms_text": s("string", description="app-made code: the text, `sotto <code>`")}),
  "PhoneVerify": s("object", required=["number", "otp", "username", "registration"], additionalProperties=False, properties={"number": E164,
      "otp": s("string"), "by_sms": s("boolean"), "username": s("string", description="the new user's (random) name; must hash to registration.username_hash"),
      "registration": ref("RegisterRequest")}),
  "PhoneVerified": s("object", required=["delivered"], properties={"delivered": s("integer", description="held messages sealed to this device")}),
})
schemas["UserDevices"]["properties"]["organisation"] = s("string", description="display name of an organisation's sender account (set only for those, by the server operator)")

doc = {
  "openapi": "3.0.3",
  "info": {"title": "sotto security platform", "version": "1",
           "description": "See docs/api.md. Every error is ErrorBody JSON. Signed requests carry x-sotto-device, x-sotto-time and x-sotto-signature "
               "(Ed25519 over request_signing_bytes); state-changing ones are single-use. Limits (docs/api.md, 'Limits and behaviour'): read and write "
               "timeouts, connections per address, rate limits (429 with Retry-After), mailbox quotas (409 mailbox_full), datagram size (413)."},
  "paths": paths,
  "components": {"schemas": schemas, "securitySchemes": {"senderKey": {"type": "http", "scheme": "bearer",
      "description": "a sender API key (`sotto admin sender add` / `add-key`): stored hashed, shown once, revocable"}, "deviceSignature": {"type": "apiKey", "in": "header", "name": "x-sotto-signature",
      "description": "hex Ed25519 signature by the device in x-sotto-device over \"sotto/v1/request\\n\" METHOD \"\\n\" PATH_AND_QUERY \"\\n\" TIME \"\\n\" hex(SHA-256(body)); x-sotto-time within 5 minutes of the server clock"}}},
}
out = pathlib.Path(__file__).resolve().parent.parent / "src/api/openapi.json"
out.write_text(json.dumps(doc, indent=1) + "\n")
