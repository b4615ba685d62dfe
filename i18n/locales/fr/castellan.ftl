# Pages de Castellan, en français.

## Toutes les pages
brand-tagline = Service central d'authentification
skip-link = Aller au contenu principal
language-menu = Langue

## Connexion
login-title = Connexion
login-continue-to = pour continuer vers { $name }
login-with-organization = avec le compte de votre organisation
login-username = Identifiant
login-password = Mot de passe
login-submit = Se connecter
login-other-ways = Autres moyens de connexion
login-or-sign-in-with = ou se connecter avec
login-footnote = Une seule connexion ici vous connecte à toutes les applications qui utilisent ce service. Fermez votre navigateur quand vous avez terminé sur un ordinateur partagé.
login-invalid-credentials = L'identifiant ou le mot de passe saisi est incorrect.
login-throttled = Trop de tentatives de connexion échouées. Veuillez patienter quelques minutes avant de réessayer.
login-cross-site = Ce formulaire de connexion a été envoyé depuis un autre site. Veuillez vous connecter ici.
login-form-expired = Votre formulaire de connexion avait expiré ou a déjà été utilisé. Veuillez vous reconnecter (les cookies doivent être activés).
account-password-expired = Votre mot de passe a expiré. Veuillez le changer, puis vous reconnecter.
account-must-change-password = Vous devez changer votre mot de passe avant de pouvoir vous connecter.
account-locked = Votre compte est verrouillé. Veuillez réessayer plus tard ou contacter votre assistance.
account-disabled = Votre compte est désactivé. Veuillez contacter votre assistance.
account-expired = Votre compte a expiré. Veuillez contacter votre assistance.
account-not-allowed-now = Votre compte ne peut pas se connecter en ce moment.
account-not-allowed-from-here = Votre compte ne peut pas se connecter depuis cet ordinateur.
change-password = Changer votre mot de passe
continue-to-application = Continuer vers l'application

## Avis sur le mot de passe
notice-title = Votre mot de passe
notice-heading = Vous êtes connecté
notice-expires-in-days = { $count ->
    [one] Votre mot de passe expire dans { $count } jour.
   *[other] Votre mot de passe expire dans { $count } jours.
}
notice-expires-in-hours = { $count ->
    [one] Votre mot de passe expire dans { $count } heure.
   *[other] Votre mot de passe expire dans { $count } heures.
}
notice-grace-logins = { $count ->
    [one] Votre mot de passe a expiré ; il reste { $count } connexion avant le verrouillage du compte.
   *[other] Votre mot de passe a expiré ; il reste { $count } connexions avant le verrouillage du compte.
}
notice-other = { $detail }

## Connecté, déconnecté
signed-in-title = Connecté
signed-in-heading = Vous êtes connecté
signed-in-as = Vous êtes connecté en tant que { $user }. Les applications qui utilisent ce service vous laisseront entrer sans redemander.
signed-in-through = Vous êtes connecté en tant que { $user } via { $upstream }. Les applications qui utilisent ce service vous laisseront entrer sans redemander.
sign-out = Se déconnecter
signed-out-title = Déconnecté
signed-out-heading = Vous êtes déconnecté
signed-out-message = Votre session d'authentification unique est terminée. Par sécurité, fermez votre navigateur si vous avez utilisé des applications qui gardent leurs propres sessions.
sign-in-again = Se reconnecter
back-to-sign-in = Retour à la connexion

## Erreurs
error-invalid-request = Requête invalide
error-request-not-understood = La demande de connexion n'a pas pu être comprise.
error-invalid-service-address = Adresse d'application invalide
error-service-address-too-long = L'adresse de l'application d'où vous venez est trop longue.
error-service-not-authorized = Application non autorisée
error-service-not-authorized-message = L'application à laquelle vous avez tenté de vous connecter n'est pas autorisée à utiliser ce service de connexion.
error-contact-administrator = Contactez l'administrateur de l'application.
error-unavailable = Temporairement indisponible
error-unavailable-message = La connexion est temporairement indisponible. Veuillez réessayer dans quelques minutes.
error-busy = Trop de connexions en cours
error-busy-message = Le service de connexion traite trop de demandes en ce moment. Veuillez réessayer dans une minute.
error-sign-in-expired = Connexion expirée
error-sign-in-expired-message = Cette connexion a expiré ou est déjà terminée. Veuillez vous reconnecter.
error-request-expired-message = Cette demande de connexion a expiré ou a déjà été utilisée. Retournez à l'application et connectez-vous à nouveau.
error-sign-in-failed = Échec de la connexion
error-not-confirmed-message = La connexion n'a pas pu être confirmée. Retournez à l'application et connectez-vous à nouveau.
error-application-request-refused = La demande de l'application n'a pas pu être acceptée. Retournez à l'application et réessayez.
error-response-not-understood = La réponse de connexion n'a pas pu être comprise.
error-response-not-built = La réponse n'a pas pu être construite.
error-invalid-logout = Demande de déconnexion invalide
error-logout-not-understood = La demande de déconnexion n'a pas pu être comprise.
error-sign-out-failed = Échec de la déconnexion
error-technical-detail = Détails pour l'administrateur de l'application : { $detail }

## Connexion par un autre fournisseur d'identité
upstream-unknown = Ce moyen de connexion n'existe pas.
upstream-not-silent = Ce moyen de connexion ne peut pas être utilisé sans interaction.
upstream-not-started = La connexion n'a pas pu démarrer.
upstream-bad-address = L'adresse du fournisseur d'identité est invalide.
upstream-no-such-sp = Ce fournisseur de services n'existe pas ici.
upstream-malformed = La réponse du fournisseur d'identité est malformée (un paramètre est donné deux fois).
upstream-expired = Cette connexion a expiré, a déjà été utilisée ou a été commencée dans un autre navigateur. Veuillez vous reconnecter.
upstream-not-fresh = Cette application vous demande de vous reconnecter, et le fournisseur d'identité n'a pas confirmé une nouvelle connexion.
upstream-cannot-renew = Cette application vous demande de vous reconnecter, et { $upstream } ne peut pas confirmer une nouvelle connexion. Veuillez choisir un autre moyen de connexion.
upstream-missing-attributes = Le fournisseur d'identité n'a pas envoyé ce que ce service doit savoir de vous.
upstream-failed = Le fournisseur d'identité n'a pas pu vous connecter. Veuillez réessayer.

## Poursuite (envoi de formulaire)
post-title = Poursuite
post-heading = Poursuite vers l'application
post-lead = Si rien ne se passe, appuyez sur le bouton ci-dessous.
post-continue = Continuer

## Deuxième étape de la connexion
step-title = Vérification en deux étapes
step-enrol-heading = Configurer la vérification en deux étapes
step-enrol-service-asks = { $name } demande une deuxième étape lors de la connexion.
step-enrol-protects = Une deuxième étape protège votre compte.
step-enrol-add = Ajoutez ce compte à une application d'authentification, puis saisissez le code qu'elle affiche.
step-continue-as = pour continuer vers { $name } en tant que { $user }
step-signing-in-as = Connexion en tant que { $user }
step-scan = Scannez ce code avec une application d'authentification (FreeOTP, Aegis, Google Authenticator, 1Password…).
qr-label = Code QR du compte à ajouter
cant-scan = Impossible de le scanner ? Ajoutez plutôt cette adresse à l'application :
step-keep-codes = Conservez ces codes de secours en lieu sûr. Chacun vous connecte une fois si vous perdez votre téléphone. Ils ne sont affichés que maintenant.
step-enter-code = Saisissez le code à 6 chiffres que l'application affiche maintenant.
code-from-app = Code de l'application
code-or-recovery = Code de votre application d'authentification, ou un code de secours
verify = Vérifier
or = ou
or-instead-of-app = ou, au lieu d'une application
use-passkey = Utiliser une clé d'accès ou une clé de sécurité
step-invalid-form = Le formulaire de vérification n'a pas pu être compris.
step-enter-code-or-passkey = Saisissez le code de votre application d'authentification, ou utilisez votre clé d'accès.
step-wrong-code = Ce code n'est pas valide ou a déjà été utilisé. Saisissez le code actuel de votre application d'authentification.
step-throttled = Trop de codes erronés. Veuillez patienter quelques minutes avant de réessayer.

## Clés d'accès (static/webauthn.js)
passkey-cancelled = La demande de clé d'accès a été annulée ou a expiré.
passkey-exists = Cette clé d'accès est déjà enregistrée.
passkey-failed = La clé d'accès n'a pas pu être utilisée

## Vos moyens de connexion (/mfa)
mfa-title = Vos moyens de connexion
mfa-signed-in-as = Connecté en tant que { $user }
mfa-new-codes = Vos nouveaux codes de secours
mfa-new-codes-note = Conservez-les en lieu sûr. Chacun vous connecte une fois si vous perdez votre téléphone. Ils ne sont affichés que maintenant ; les anciens ne fonctionnent plus.
mfa-done = Terminé
mfa-add-app-heading = Ajouter une application d'authentification
mfa-scan = Scannez ce code avec l'application, puis saisissez le code qu'elle affiche.
mfa-add-app-submit = Ajouter l'application
mfa-cancel = Annuler
mfa-second-factors = Seconds facteurs
mfa-no-factors = Vous n'avez pas encore de second facteur.
mfa-factor-added = ajouté le { $date }
mfa-remove = Supprimer
mfa-remove-label = Supprimer { $label } ({ $kind })
mfa-recovery-left = { $count ->
    [one] Code de secours restant : { $count }
   *[other] Codes de secours restants : { $count }
}
mfa-add-app = Ajouter une application d'authentification
mfa-add-passkey = Ajouter une clé d'accès ou une clé de sécurité
mfa-make-codes = Générer de nouveaux codes de secours
mfa-kind-totp = application d'authentification
mfa-kind-passkey = clé d'accès
mfa-kind-security-key = clé de sécurité
mfa-app-label = Application d'authentification
mfa-cross-site = Ce formulaire a été envoyé depuis un autre site.
mfa-form-expired = Le formulaire avait expiré. Veuillez réessayer.
mfa-no-such-method = Ce moyen de connexion n'existe pas.
mfa-only-factor = C'est votre seul second facteur, et certaines applications en exigent un : ajoutez-en un autre avant de le supprimer.
mfa-removed = Le moyen de connexion a été supprimé.
mfa-add-too-slow = L'ajout de l'application a pris trop de temps. Veuillez recommencer.
mfa-app-added = L'application d'authentification a été ajoutée.
mfa-wrong-code = Ce code n'est pas valide. Saisissez le code que l'application affiche maintenant.
mfa-passkey-not-added = La clé d'accès n'a pas pu être ajoutée. Veuillez réessayer.
mfa-passkey-added = La clé d'accès a été ajoutée.
mfa-unknown-action = Action inconnue.

## Consent
consent-title = Partager vos informations ?
consent-lead = { $name } recevra les informations suivantes vous concernant ({ $user }).
consent-nothing = Aucun attribut, seulement le fait que vous vous êtes connecté.
consent-accept = Accepter
consent-decline = Refuser
consent-remembered = Votre décision est mémorisée ; elle vous sera redemandée si ces informations changent.
consent-invalid-form = Le formulaire de consentement n'a pas pu être compris.
consent-declined-heading = Rien n'a été partagé
consent-declined-message = Vous avez refusé de partager vos informations avec { $name }. Vous n'y êtes pas connecté.

## The device authorization grant (RFC 8628)
device-title = Connecter un appareil
device-heading = Connecter un appareil
device-lead = Saisissez le code affiché par votre appareil.
device-code-label = Code
device-submit = Continuer
device-unknown-code = Ce code est inconnu ou a expiré. Vérifiez-le sur votre appareil, ou recommencez depuis celui-ci.
device-throttled = Trop de codes erronés ont été saisis depuis cet endroit. Patientez quelques minutes, puis réessayez.
device-confirm-heading = Autoriser cet appareil ?
device-confirm-lead = { $name } demande à agir en votre nom ({ $user }) sur un appareil.
device-confirm-scopes = Accès demandé :
device-confirm-hint = N'autorisez que si vous venez de lancer cette demande sur un appareil qui vous appartient.
device-approve = Autoriser
device-deny = Refuser
device-approved-heading = Appareil connecté
device-approved-message = Vous pouvez revenir à votre appareil ; il continuera de lui-même.
device-denied-heading = Appareil non connecté
device-denied-message = L'appareil a été refusé. Rien ne lui a été transmis.
