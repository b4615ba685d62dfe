# Castellan's pages, English (the reference catalogue: every other language
# has exactly these ids). Variables: $name, $user, $upstream, $label,
# $kind, $date, $detail are texts; $count is a number.

## Every page
brand-tagline = Central Authentication Service
skip-link = Skip to main content
language-menu = Language

## Login
login-title = Sign in
login-continue-to = to continue to { $name }
login-with-organization = with your organization account
login-username = Username
login-password = Password
login-submit = Sign in
login-other-ways = Other ways to sign in
login-or-sign-in-with = or sign in with
login-footnote = Signing in once here signs you in to every application that uses this service. Close your browser when you are done on a shared computer.
login-invalid-credentials = The username or password you entered is incorrect.
login-throttled = Too many failed sign-in attempts. Please wait a few minutes before trying again.
login-cross-site = This sign-in form was sent from another site. Please sign in here.
login-form-expired = Your sign-in form had expired or was already used. Please sign in again (cookies must be enabled).
account-password-expired = Your password has expired. Please change it, then sign in again.
account-must-change-password = You must change your password before you can sign in.
account-locked = Your account is locked. Please try again later or contact your help desk.
account-disabled = Your account is disabled. Please contact your help desk.
account-expired = Your account has expired. Please contact your help desk.
account-not-allowed-now = Your account may not sign in at this time.
account-not-allowed-from-here = Your account may not sign in from this computer.
change-password = Change your password
continue-to-application = Continue to the application

## Password notices
notice-title = Your password
notice-heading = You are signed in
notice-expires-in-days = { $count ->
    [one] Your password expires in { $count } day.
   *[other] Your password expires in { $count } days.
}
notice-expires-in-hours = { $count ->
    [one] Your password expires in { $count } hour.
   *[other] Your password expires in { $count } hours.
}
notice-grace-logins = { $count ->
    [one] Your password has expired; { $count } sign-in left before the account is locked.
   *[other] Your password has expired; { $count } sign-ins left before the account is locked.
}
notice-other = { $detail }

## Signed in, signed out
signed-in-title = Signed in
signed-in-heading = You are signed in
signed-in-as = You are signed in as { $user }. Applications that use this service will let you in without asking again.
signed-in-through = You are signed in as { $user } through { $upstream }. Applications that use this service will let you in without asking again.
sign-out = Sign out
signed-out-title = Signed out
signed-out-heading = You have signed out
signed-out-message = Your single sign-on session has ended. For security, close your browser if you used applications that keep their own sessions.
sign-in-again = Sign in again
back-to-sign-in = Back to sign-in

## Errors
error-invalid-request = Invalid request
error-request-not-understood = The sign-in request could not be understood.
error-invalid-service-address = Invalid application address
error-service-address-too-long = The address of the application you came from is too long.
error-service-not-authorized = Application not authorized
error-service-not-authorized-message = The application you attempted to sign in to is not authorized to use this sign-in service.
error-contact-administrator = Contact the application's administrator.
error-unavailable = Temporarily unavailable
error-unavailable-message = Sign-in is temporarily unavailable. Please try again in a few minutes.
error-busy = Too many sign-ins in progress
error-busy-message = The sign-in service is handling too many requests right now. Please try again in a minute.
error-sign-in-expired = Sign-in expired
error-sign-in-expired-message = This sign-in has expired or was already completed. Please sign in again.
error-request-expired-message = This sign-in request expired or was already used. Go back to the application and sign in again.
error-sign-in-failed = Sign-in failed
error-not-confirmed-message = The sign-in could not be confirmed. Go back to the application and sign in again.
error-application-request-refused = The application's request could not be accepted. Go back to the application and try again.
error-response-not-understood = The sign-in response could not be understood.
error-response-not-built = The response could not be built.
error-invalid-logout = Invalid logout request
error-logout-not-understood = The logout request could not be understood.
error-sign-out-failed = Sign-out failed
error-technical-detail = Details for the application's administrator: { $detail }

## Sign-in through another identity provider
upstream-unknown = This sign-in option does not exist.
upstream-not-silent = This sign-in option cannot be used silently.
upstream-not-started = The sign-in could not be started.
upstream-bad-address = The identity provider's address is invalid.
upstream-no-such-sp = There is no such service provider here.
upstream-malformed = The identity provider's answer is malformed (a parameter is given twice).
upstream-expired = This sign-in expired, was already used, or was started in another browser. Please sign in again.
upstream-not-fresh = This application asks you to sign in again, and the identity provider did not confirm a fresh sign-in.
upstream-cannot-renew = This application asks you to sign in again, and { $upstream } cannot confirm a fresh sign-in. Please choose another way to sign in.
upstream-missing-attributes = The identity provider did not send what this service needs to know about you.
upstream-failed = The identity provider could not sign you in. Please try again.

## Continuing (form post)
post-title = Continuing
post-heading = Continuing to the application
post-lead = If nothing happens, press the button below.
post-continue = Continue

## Second step of a sign-in
step-title = Two-step verification
step-enrol-heading = Set up two-step verification
step-enrol-service-asks = { $name } asks for a second step when you sign in.
step-enrol-protects = A second step protects your account.
step-enrol-add = Add this account to an authenticator app, then enter the code it shows.
step-continue-as = to continue to { $name } as { $user }
step-signing-in-as = Signing in as { $user }
step-scan = Scan this code with an authenticator app (FreeOTP, Aegis, Google Authenticator, 1Password…).
qr-label = QR code of the account to add
cant-scan = Can't scan it? Add this address to the app instead:
step-keep-codes = Keep these recovery codes somewhere safe. Each one signs you in once if you lose your phone. They are shown only now.
step-enter-code = Enter the 6-digit code the app shows now.
code-from-app = Code from the app
code-or-recovery = Code from your authenticator app, or a recovery code
verify = Verify
or = or
or-instead-of-app = or, instead of an app
use-passkey = Use a passkey or security key
step-invalid-form = The verification form could not be understood.
step-enter-code-or-passkey = Enter the code from your authenticator app, or use your passkey.
step-wrong-code = That code is not valid, or was already used. Enter the current code from your authenticator app.
step-throttled = Too many wrong codes. Please wait a few minutes before trying again.

## Passkeys (static/webauthn.js)
passkey-cancelled = The passkey request was cancelled or timed out.
passkey-exists = This passkey is already registered.
passkey-failed = The passkey could not be used

## The user's own sign-in methods (/mfa)
mfa-title = Your sign-in methods
mfa-signed-in-as = Signed in as { $user }
mfa-new-codes = Your new recovery codes
mfa-new-codes-note = Keep them somewhere safe. Each one signs you in once if you lose your phone. They are shown only now; the old ones no longer work.
mfa-done = Done
mfa-add-app-heading = Add an authenticator app
mfa-scan = Scan this code with the app, then enter the code it shows.
mfa-add-app-submit = Add the app
mfa-cancel = Cancel
mfa-second-factors = Second factors
mfa-no-factors = You have no second factor yet.
mfa-factor-added = added { $date }
mfa-remove = Remove
mfa-remove-label = Remove { $label } ({ $kind })
mfa-recovery-left = { $count ->
    [one] Recovery codes left: { $count }
   *[other] Recovery codes left: { $count }
}
mfa-add-app = Add an authenticator app
mfa-add-passkey = Add a passkey or security key
mfa-make-codes = Make new recovery codes
mfa-kind-totp = authenticator app
mfa-kind-passkey = passkey
mfa-kind-security-key = security key
mfa-app-label = Authenticator app
mfa-cross-site = This form was sent from another site.
mfa-form-expired = The form had expired. Please try again.
mfa-no-such-method = No such sign-in method.
mfa-only-factor = This is your only second factor, and some applications require one: add another before removing it.
mfa-removed = The sign-in method was removed.
mfa-add-too-slow = Adding the app took too long. Please start again.
mfa-app-added = The authenticator app was added.
mfa-wrong-code = That code is not valid. Enter the code the app shows now.
mfa-passkey-not-added = The passkey could not be added. Please try again.
mfa-passkey-added = The passkey was added.
mfa-unknown-action = Unknown action.

## Consent
consent-title = Share your information?
consent-lead = { $name } will receive the following information about you ({ $user }).
consent-nothing = No attributes, only that you signed in.
consent-accept = Accept
consent-decline = Decline
consent-remembered = Your decision is remembered; you will be asked again if the information changes.
consent-invalid-form = The consent form could not be understood.
consent-declined-heading = Nothing was shared
consent-declined-message = You declined to share your information with { $name }. You were not signed in to it.

## The device authorization grant (RFC 8628)
device-title = Connect a device
device-heading = Connect a device
device-lead = Enter the code your device shows.
device-code-label = Code
device-submit = Continue
device-unknown-code = This code is unknown or has expired. Check it on your device, or start again there.
device-throttled = Too many wrong codes were typed from here. Wait a few minutes, then try again.
device-confirm-heading = Allow this device?
device-confirm-lead = { $name } asks to act as you ({ $user }) on a device.
device-confirm-scopes = Access asked for:
device-confirm-hint = Allow only if you started this on a device of your own just now.
device-approve = Allow
device-deny = Deny
device-approved-heading = Device connected
device-approved-message = You can go back to your device; it will continue by itself.
device-denied-heading = Device not connected
device-denied-message = The device was refused. Nothing was shared with it.
