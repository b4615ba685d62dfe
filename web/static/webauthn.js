// Passkeys (WebAuthn) on the second-step and /mfa pages; the pages work
// without it for the other factors. Served as /static/webauthn.js (CSP:
// script-src 'self', so no inline script anywhere).
//
// Signing in: a click on #passkey-button reads the request options the server
// put in <script type="application/json" id="webauthn-options">
// (webauthn-rs' RequestChallengeResponse: {"publicKey": {...}} with
// base64url strings for the binary fields), calls
// navigator.credentials.get(), writes the assertion as JSON into the hidden
// input `webauthn` of form#webauthn-form and submits that form.
// Registering: #passkey-register-button, #webauthn-create-options,
// navigator.credentials.create(), hidden input `webauthn_register` of
// form#webauthn-register-form.
// Errors (the user cancelled, no authenticator...) go to #webauthn-error.
(function () {
  "use strict";

  function fromB64url(s) {
    var b64 = String(s).replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var bin = atob(b64);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function toB64url(buf) {
    if (buf === null || buf === undefined) return null;
    var bytes = new Uint8Array(buf);
    var bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // JSON nulls mean "absent" to serde; to the browser's WebIDL a null enum
  // or string is an error, so leave them out.
  function dropNulls(v) {
    if (Array.isArray(v)) return v.map(dropNulls);
    if (v && typeof v === "object") {
      var out = {};
      Object.keys(v).forEach(function (k) {
        if (v[k] !== null && v[k] !== undefined) out[k] = dropNulls(v[k]);
      });
      return out;
    }
    return v;
  }

  function descriptors(list) {
    return (list || []).map(function (d) {
      var c = Object.assign({}, d);
      c.id = fromB64url(d.id);
      return c;
    });
  }

  function readOptions(id) {
    var el = document.getElementById(id);
    if (!el) throw new Error("no #" + id + " on this page");
    var parsed = dropNulls(JSON.parse(el.textContent));
    if (!parsed || typeof parsed.publicKey !== "object") throw new Error("#" + id + " has no publicKey");
    return parsed;
  }

  function requestOptions() {
    var o = readOptions("webauthn-options");
    var pk = Object.assign({}, o.publicKey);
    pk.challenge = fromB64url(pk.challenge);
    if (pk.allowCredentials) pk.allowCredentials = descriptors(pk.allowCredentials);
    var options = { publicKey: pk };
    if (o.mediation) options.mediation = o.mediation;
    return options;
  }

  function creationOptions() {
    var o = readOptions("webauthn-create-options");
    var pk = Object.assign({}, o.publicKey);
    pk.challenge = fromB64url(pk.challenge);
    pk.user = Object.assign({}, pk.user, { id: fromB64url(pk.user.id) });
    if (pk.excludeCredentials) pk.excludeCredentials = descriptors(pk.excludeCredentials);
    return { publicKey: pk };
  }

  function withAttachment(json, cred) {
    if (cred.authenticatorAttachment) json.authenticatorAttachment = cred.authenticatorAttachment;
    return json;
  }

  function assertionJson(cred) {
    var r = cred.response;
    return withAttachment({
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: {
        clientDataJSON: toB64url(r.clientDataJSON),
        authenticatorData: toB64url(r.authenticatorData),
        signature: toB64url(r.signature),
        userHandle: r.userHandle && r.userHandle.byteLength ? toB64url(r.userHandle) : null,
      },
    }, cred);
  }

  function attestationJson(cred) {
    var r = cred.response;
    return withAttachment({
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: toB64url(r.attestationObject),
        clientDataJSON: toB64url(r.clientDataJSON),
      },
    }, cred);
  }

  function showError(err) {
    var box = document.getElementById("webauthn-error");
    var msg;
    if (err && err.name === "NotAllowedError") {
      msg = box && box.getAttribute("data-cancelled") || "The passkey request was cancelled or timed out.";
    } else if (err && err.name === "InvalidStateError") {
      msg = box && box.getAttribute("data-exists") || "This passkey is already registered.";
    } else {
      msg = (box && box.getAttribute("data-failed") || "The passkey could not be used") +
        (err && err.message ? ": " + err.message : ".");
    }
    if (box) {
      box.setAttribute("role", "alert");
      box.textContent = msg;
      box.hidden = false;
    } else if (window.console) {
      console.warn(msg);
    }
  }

  function submit(formId, field, json) {
    var form = document.getElementById(formId);
    if (!form) throw new Error("no form#" + formId);
    var input = form.querySelector('input[name="' + field + '"]');
    if (!input) {
      input = document.createElement("input");
      input.type = "hidden";
      input.name = field;
      form.appendChild(input);
    }
    input.value = JSON.stringify(json);
    form.submit();
  }

  function wire(buttonId, run) {
    var button = document.getElementById(buttonId);
    if (!button) return;
    if (!window.PublicKeyCredential || !navigator.credentials) {
      button.disabled = true;
      showError(new Error("this browser does not support passkeys"));
      return;
    }
    button.addEventListener("click", function (ev) {
      ev.preventDefault();
      if (button.disabled) return;
      button.disabled = true;
      var box = document.getElementById("webauthn-error");
      if (box) box.textContent = "";
      Promise.resolve()
        .then(run)
        .catch(function (err) {
          button.disabled = false;
          showError(err);
        });
    });
  }

  function start() {
    wire("passkey-button", function () {
      return navigator.credentials.get(requestOptions()).then(function (cred) {
        if (!cred) throw new Error("no credential");
        submit("webauthn-form", "webauthn", assertionJson(cred));
      });
    });

    wire("passkey-register-button", function () {
      return navigator.credentials.create(creationOptions()).then(function (cred) {
        if (!cred) throw new Error("no credential");
        submit("webauthn-register-form", "webauthn_register", attestationJson(cred));
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
