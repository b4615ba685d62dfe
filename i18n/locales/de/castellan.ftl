# Castellans Seiten, auf Deutsch.

## Jede Seite
brand-tagline = Zentraler Anmeldedienst
skip-link = Zum Hauptinhalt springen
language-menu = Sprache

## Anmeldung
login-title = Anmelden
login-continue-to = um mit { $name } fortzufahren
login-with-organization = mit dem Konto Ihrer Organisation
login-username = Benutzername
login-password = Passwort
login-submit = Anmelden
login-other-ways = Andere Anmeldemöglichkeiten
login-or-sign-in-with = oder anmelden mit
login-footnote = Eine Anmeldung hier meldet Sie bei allen Anwendungen an, die diesen Dienst nutzen. Schließen Sie Ihren Browser, wenn Sie an einem gemeinsam genutzten Computer fertig sind.
login-invalid-credentials = Der eingegebene Benutzername oder das Passwort ist falsch.
login-throttled = Zu viele fehlgeschlagene Anmeldeversuche. Bitte warten Sie einige Minuten, bevor Sie es erneut versuchen.
login-cross-site = Dieses Anmeldeformular wurde von einer anderen Website gesendet. Bitte melden Sie sich hier an.
login-form-expired = Ihr Anmeldeformular war abgelaufen oder wurde bereits verwendet. Bitte melden Sie sich erneut an (Cookies müssen aktiviert sein).
account-password-expired = Ihr Passwort ist abgelaufen. Bitte ändern Sie es und melden Sie sich dann erneut an.
account-must-change-password = Sie müssen Ihr Passwort ändern, bevor Sie sich anmelden können.
account-locked = Ihr Konto ist gesperrt. Bitte versuchen Sie es später erneut oder wenden Sie sich an Ihren Helpdesk.
account-disabled = Ihr Konto ist deaktiviert. Bitte wenden Sie sich an Ihren Helpdesk.
account-expired = Ihr Konto ist abgelaufen. Bitte wenden Sie sich an Ihren Helpdesk.
account-not-allowed-now = Ihr Konto darf sich zu dieser Zeit nicht anmelden.
account-not-allowed-from-here = Ihr Konto darf sich von diesem Computer aus nicht anmelden.
change-password = Passwort ändern
continue-to-application = Weiter zur Anwendung

## Hinweise zum Passwort
notice-title = Ihr Passwort
notice-heading = Sie sind angemeldet
notice-expires-in-days = { $count ->
    [one] Ihr Passwort läuft in { $count } Tag ab.
   *[other] Ihr Passwort läuft in { $count } Tagen ab.
}
notice-expires-in-hours = { $count ->
    [one] Ihr Passwort läuft in { $count } Stunde ab.
   *[other] Ihr Passwort läuft in { $count } Stunden ab.
}
notice-grace-logins = { $count ->
    [one] Ihr Passwort ist abgelaufen; noch { $count } Anmeldung, bevor das Konto gesperrt wird.
   *[other] Ihr Passwort ist abgelaufen; noch { $count } Anmeldungen, bevor das Konto gesperrt wird.
}
notice-other = { $detail }

## Angemeldet, abgemeldet
signed-in-title = Angemeldet
signed-in-heading = Sie sind angemeldet
signed-in-as = Sie sind als { $user } angemeldet. Anwendungen, die diesen Dienst nutzen, lassen Sie ohne erneute Nachfrage hinein.
signed-in-through = Sie sind als { $user } über { $upstream } angemeldet. Anwendungen, die diesen Dienst nutzen, lassen Sie ohne erneute Nachfrage hinein.
sign-out = Abmelden
signed-out-title = Abgemeldet
signed-out-heading = Sie haben sich abgemeldet
signed-out-message = Ihre Single-Sign-On-Sitzung ist beendet. Schließen Sie zur Sicherheit Ihren Browser, wenn Sie Anwendungen mit eigenen Sitzungen verwendet haben.
sign-in-again = Erneut anmelden
back-to-sign-in = Zurück zur Anmeldung

## Fehler
error-invalid-request = Ungültige Anfrage
error-request-not-understood = Die Anmeldeanfrage konnte nicht verstanden werden.
error-invalid-service-address = Ungültige Anwendungsadresse
error-service-address-too-long = Die Adresse der Anwendung, von der Sie kommen, ist zu lang.
error-service-not-authorized = Anwendung nicht zugelassen
error-service-not-authorized-message = Die Anwendung, bei der Sie sich anmelden wollten, ist für diesen Anmeldedienst nicht zugelassen.
error-contact-administrator = Wenden Sie sich an die Administration der Anwendung.
error-unavailable = Vorübergehend nicht verfügbar
error-unavailable-message = Die Anmeldung ist vorübergehend nicht verfügbar. Bitte versuchen Sie es in einigen Minuten erneut.
error-busy = Zu viele laufende Anmeldungen
error-busy-message = Der Anmeldedienst bearbeitet gerade zu viele Anfragen. Bitte versuchen Sie es in einer Minute erneut.
error-sign-in-expired = Anmeldung abgelaufen
error-sign-in-expired-message = Diese Anmeldung ist abgelaufen oder wurde bereits abgeschlossen. Bitte melden Sie sich erneut an.
error-request-expired-message = Diese Anmeldeanfrage ist abgelaufen oder wurde bereits verwendet. Kehren Sie zur Anwendung zurück und melden Sie sich erneut an.
error-sign-in-failed = Anmeldung fehlgeschlagen
error-not-confirmed-message = Die Anmeldung konnte nicht bestätigt werden. Kehren Sie zur Anwendung zurück und melden Sie sich erneut an.
error-application-request-refused = Die Anfrage der Anwendung konnte nicht angenommen werden. Kehren Sie zur Anwendung zurück und versuchen Sie es erneut.
error-response-not-understood = Die Anmeldeantwort konnte nicht verstanden werden.
error-response-not-built = Die Antwort konnte nicht erstellt werden.
error-invalid-logout = Ungültige Abmeldeanfrage
error-logout-not-understood = Die Abmeldeanfrage konnte nicht verstanden werden.
error-sign-out-failed = Abmeldung fehlgeschlagen
error-technical-detail = Details für die Administration der Anwendung: { $detail }

## Anmeldung über einen anderen Identitätsanbieter
upstream-unknown = Diese Anmeldemöglichkeit gibt es nicht.
upstream-not-silent = Diese Anmeldemöglichkeit kann nicht ohne Interaktion verwendet werden.
upstream-not-started = Die Anmeldung konnte nicht gestartet werden.
upstream-bad-address = Die Adresse des Identitätsanbieters ist ungültig.
upstream-no-such-sp = Diesen Dienstanbieter gibt es hier nicht.
upstream-malformed = Die Antwort des Identitätsanbieters ist fehlerhaft (ein Parameter ist doppelt angegeben).
upstream-expired = Diese Anmeldung ist abgelaufen, wurde bereits verwendet oder in einem anderen Browser begonnen. Bitte melden Sie sich erneut an.
upstream-not-fresh = Diese Anwendung verlangt eine erneute Anmeldung, und der Identitätsanbieter hat keine neue Anmeldung bestätigt.
upstream-cannot-renew = Diese Anwendung verlangt eine erneute Anmeldung, und { $upstream } kann keine neue Anmeldung bestätigen. Bitte wählen Sie eine andere Anmeldemöglichkeit.
upstream-missing-attributes = Der Identitätsanbieter hat nicht gesendet, was dieser Dienst über Sie wissen muss.
upstream-failed = Der Identitätsanbieter konnte Sie nicht anmelden. Bitte versuchen Sie es erneut.

## Weiterleitung (Formularversand)
post-title = Weiterleitung
post-heading = Weiter zur Anwendung
post-lead = Wenn nichts passiert, drücken Sie die Schaltfläche unten.
post-continue = Weiter

## Zweiter Schritt der Anmeldung
step-title = Zwei-Schritt-Verifizierung
step-enrol-heading = Zwei-Schritt-Verifizierung einrichten
step-enrol-service-asks = { $name } verlangt bei der Anmeldung einen zweiten Schritt.
step-enrol-protects = Ein zweiter Schritt schützt Ihr Konto.
step-enrol-add = Fügen Sie dieses Konto einer Authenticator-App hinzu und geben Sie dann den angezeigten Code ein.
step-continue-as = um mit { $name } als { $user } fortzufahren
step-signing-in-as = Anmeldung als { $user }
step-scan = Scannen Sie diesen Code mit einer Authenticator-App (FreeOTP, Aegis, Google Authenticator, 1Password…).
qr-label = QR-Code des hinzuzufügenden Kontos
cant-scan = Scannen nicht möglich? Fügen Sie stattdessen diese Adresse der App hinzu:
step-keep-codes = Bewahren Sie diese Wiederherstellungscodes sicher auf. Jeder meldet Sie einmal an, falls Sie Ihr Telefon verlieren. Sie werden nur jetzt angezeigt.
step-enter-code = Geben Sie den 6-stelligen Code ein, den die App jetzt anzeigt.
code-from-app = Code aus der App
code-or-recovery = Code aus Ihrer Authenticator-App oder ein Wiederherstellungscode
verify = Bestätigen
or = oder
or-instead-of-app = oder statt einer App
use-passkey = Passkey oder Sicherheitsschlüssel verwenden
step-invalid-form = Das Bestätigungsformular konnte nicht verstanden werden.
step-enter-code-or-passkey = Geben Sie den Code aus Ihrer Authenticator-App ein oder verwenden Sie Ihren Passkey.
step-wrong-code = Dieser Code ist ungültig oder wurde bereits verwendet. Geben Sie den aktuellen Code aus Ihrer Authenticator-App ein.
step-throttled = Zu viele falsche Codes. Bitte warten Sie einige Minuten, bevor Sie es erneut versuchen.

## Passkeys (static/webauthn.js)
passkey-cancelled = Die Passkey-Anfrage wurde abgebrochen oder ist abgelaufen.
passkey-exists = Dieser Passkey ist bereits registriert.
passkey-failed = Der Passkey konnte nicht verwendet werden

## Ihre Anmeldemethoden (/mfa)
mfa-title = Ihre Anmeldemethoden
mfa-signed-in-as = Angemeldet als { $user }
mfa-new-codes = Ihre neuen Wiederherstellungscodes
mfa-new-codes-note = Bewahren Sie sie sicher auf. Jeder meldet Sie einmal an, falls Sie Ihr Telefon verlieren. Sie werden nur jetzt angezeigt; die alten gelten nicht mehr.
mfa-done = Fertig
mfa-add-app-heading = Authenticator-App hinzufügen
mfa-scan = Scannen Sie diesen Code mit der App und geben Sie dann den angezeigten Code ein.
mfa-add-app-submit = App hinzufügen
mfa-cancel = Abbrechen
mfa-second-factors = Zweite Faktoren
mfa-no-factors = Sie haben noch keinen zweiten Faktor.
mfa-factor-added = hinzugefügt am { $date }
mfa-remove = Entfernen
mfa-remove-label = { $label } ({ $kind }) entfernen
mfa-recovery-left = { $count ->
    [one] Verbleibender Wiederherstellungscode: { $count }
   *[other] Verbleibende Wiederherstellungscodes: { $count }
}
mfa-add-app = Authenticator-App hinzufügen
mfa-add-passkey = Passkey oder Sicherheitsschlüssel hinzufügen
mfa-make-codes = Neue Wiederherstellungscodes erstellen
mfa-kind-totp = Authenticator-App
mfa-kind-passkey = Passkey
mfa-kind-security-key = Sicherheitsschlüssel
mfa-app-label = Authenticator-App
mfa-cross-site = Dieses Formular wurde von einer anderen Website gesendet.
mfa-form-expired = Das Formular war abgelaufen. Bitte versuchen Sie es erneut.
mfa-no-such-method = Diese Anmeldemethode gibt es nicht.
mfa-only-factor = Dies ist Ihr einziger zweiter Faktor, und manche Anwendungen verlangen einen: Fügen Sie einen weiteren hinzu, bevor Sie ihn entfernen.
mfa-removed = Die Anmeldemethode wurde entfernt.
mfa-add-too-slow = Das Hinzufügen der App hat zu lange gedauert. Bitte beginnen Sie erneut.
mfa-app-added = Die Authenticator-App wurde hinzugefügt.
mfa-wrong-code = Dieser Code ist ungültig. Geben Sie den Code ein, den die App jetzt anzeigt.
mfa-passkey-not-added = Der Passkey konnte nicht hinzugefügt werden. Bitte versuchen Sie es erneut.
mfa-passkey-added = Der Passkey wurde hinzugefügt.
mfa-unknown-action = Unbekannte Aktion.

## Consent
consent-title = Ihre Daten weitergeben?
consent-lead = { $name } erhält die folgenden Angaben über Sie ({ $user }).
consent-nothing = Keine Attribute, nur dass Sie sich angemeldet haben.
consent-accept = Zustimmen
consent-decline = Ablehnen
consent-remembered = Ihre Entscheidung wird gespeichert; Sie werden erneut gefragt, wenn sich die Angaben ändern.
consent-invalid-form = Das Zustimmungsformular konnte nicht verarbeitet werden.
consent-declined-heading = Nichts wurde weitergegeben
consent-declined-message = Sie haben die Weitergabe Ihrer Daten an { $name } abgelehnt. Sie wurden dort nicht angemeldet.

## The device authorization grant (RFC 8628)
device-title = Gerät verbinden
device-heading = Gerät verbinden
device-lead = Geben Sie den Code ein, den Ihr Gerät anzeigt.
device-code-label = Code
device-submit = Weiter
device-unknown-code = Dieser Code ist unbekannt oder abgelaufen. Prüfen Sie ihn auf Ihrem Gerät oder beginnen Sie dort neu.
device-throttled = Von hier wurden zu viele falsche Codes eingegeben. Warten Sie einige Minuten und versuchen Sie es dann erneut.
device-confirm-heading = Dieses Gerät zulassen?
device-confirm-lead = { $name } möchte auf einem Gerät in Ihrem Namen ({ $user }) handeln.
device-confirm-scopes = Angefragter Zugriff:
device-confirm-hint = Lassen Sie es nur zu, wenn Sie dies gerade auf einem eigenen Gerät begonnen haben.
device-approve = Zulassen
device-deny = Ablehnen
device-approved-heading = Gerät verbunden
device-approved-message = Sie können zu Ihrem Gerät zurückkehren; es fährt von selbst fort.
device-denied-heading = Gerät nicht verbunden
device-denied-message = Das Gerät wurde abgelehnt. Es wurde nichts weitergegeben.
