# Páginas de Castellan, en español.

## Todas las páginas
brand-tagline = Servicio central de autenticación
skip-link = Ir al contenido principal
language-menu = Idioma

## Inicio de sesión
login-title = Iniciar sesión
login-continue-to = para continuar a { $name }
login-with-organization = con la cuenta de su organización
login-username = Usuario
login-password = Contraseña
login-submit = Iniciar sesión
login-other-ways = Otras formas de iniciar sesión
login-or-sign-in-with = o inicie sesión con
login-footnote = Iniciar sesión una vez aquí le da acceso a todas las aplicaciones que usan este servicio. Cierre el navegador cuando termine en un equipo compartido.
login-invalid-credentials = El usuario o la contraseña que ha introducido no son correctos.
login-throttled = Demasiados intentos fallidos de inicio de sesión. Espere unos minutos antes de volver a intentarlo.
login-cross-site = Este formulario de inicio de sesión se envió desde otro sitio. Inicie sesión aquí.
login-form-expired = Su formulario de inicio de sesión había caducado o ya se había usado. Vuelva a iniciar sesión (las cookies deben estar activadas).
account-password-expired = Su contraseña ha caducado. Cámbiela y vuelva a iniciar sesión.
account-must-change-password = Debe cambiar su contraseña antes de poder iniciar sesión.
account-locked = Su cuenta está bloqueada. Inténtelo más tarde o contacte con su servicio de ayuda.
account-disabled = Su cuenta está desactivada. Contacte con su servicio de ayuda.
account-expired = Su cuenta ha caducado. Contacte con su servicio de ayuda.
account-not-allowed-now = Su cuenta no puede iniciar sesión en este momento.
account-not-allowed-from-here = Su cuenta no puede iniciar sesión desde este equipo.
change-password = Cambiar su contraseña
continue-to-application = Continuar a la aplicación

## Avisos sobre la contraseña
notice-title = Su contraseña
notice-heading = Ha iniciado sesión
notice-expires-in-days = { $count ->
    [one] Su contraseña caduca en { $count } día.
   *[other] Su contraseña caduca en { $count } días.
}
notice-expires-in-hours = { $count ->
    [one] Su contraseña caduca en { $count } hora.
   *[other] Su contraseña caduca en { $count } horas.
}
notice-grace-logins = { $count ->
    [one] Su contraseña ha caducado; queda { $count } inicio de sesión antes de que se bloquee la cuenta.
   *[other] Su contraseña ha caducado; quedan { $count } inicios de sesión antes de que se bloquee la cuenta.
}
notice-other = { $detail }

## Sesión iniciada, sesión cerrada
signed-in-title = Sesión iniciada
signed-in-heading = Ha iniciado sesión
signed-in-as = Ha iniciado sesión como { $user }. Las aplicaciones que usan este servicio le dejarán entrar sin volver a preguntar.
signed-in-through = Ha iniciado sesión como { $user } a través de { $upstream }. Las aplicaciones que usan este servicio le dejarán entrar sin volver a preguntar.
sign-out = Cerrar sesión
signed-out-title = Sesión cerrada
signed-out-heading = Ha cerrado la sesión
signed-out-message = Su sesión de inicio único ha terminado. Por seguridad, cierre el navegador si usó aplicaciones que mantienen sus propias sesiones.
sign-in-again = Volver a iniciar sesión
back-to-sign-in = Volver al inicio de sesión

## Errores
error-invalid-request = Solicitud no válida
error-request-not-understood = No se pudo entender la solicitud de inicio de sesión.
error-invalid-service-address = Dirección de aplicación no válida
error-service-address-too-long = La dirección de la aplicación de la que viene es demasiado larga.
error-service-not-authorized = Aplicación no autorizada
error-service-not-authorized-message = La aplicación en la que intentó iniciar sesión no está autorizada para usar este servicio de inicio de sesión.
error-contact-administrator = Contacte con el administrador de la aplicación.
error-unavailable = No disponible temporalmente
error-unavailable-message = El inicio de sesión no está disponible temporalmente. Vuelva a intentarlo en unos minutos.
error-busy = Demasiados inicios de sesión en curso
error-busy-message = El servicio de inicio de sesión está atendiendo demasiadas solicitudes ahora mismo. Vuelva a intentarlo en un minuto.
error-sign-in-expired = Inicio de sesión caducado
error-sign-in-expired-message = Este inicio de sesión ha caducado o ya se completó. Vuelva a iniciar sesión.
error-request-expired-message = Esta solicitud de inicio de sesión caducó o ya se usó. Vuelva a la aplicación e inicie sesión de nuevo.
error-sign-in-failed = Error al iniciar sesión
error-not-confirmed-message = No se pudo confirmar el inicio de sesión. Vuelva a la aplicación e inicie sesión de nuevo.
error-application-request-refused = No se pudo aceptar la solicitud de la aplicación. Vuelva a la aplicación e inténtelo de nuevo.
error-response-not-understood = No se pudo entender la respuesta de inicio de sesión.
error-response-not-built = No se pudo construir la respuesta.
error-invalid-logout = Solicitud de cierre de sesión no válida
error-logout-not-understood = No se pudo entender la solicitud de cierre de sesión.
error-sign-out-failed = Error al cerrar sesión
error-technical-detail = Detalles para el administrador de la aplicación: { $detail }

## Inicio de sesión con otro proveedor de identidad
upstream-unknown = Esta opción de inicio de sesión no existe.
upstream-not-silent = Esta opción de inicio de sesión no se puede usar sin interacción.
upstream-not-started = No se pudo iniciar el inicio de sesión.
upstream-bad-address = La dirección del proveedor de identidad no es válida.
upstream-no-such-sp = Aquí no existe ese proveedor de servicios.
upstream-malformed = La respuesta del proveedor de identidad está mal formada (un parámetro aparece dos veces).
upstream-expired = Este inicio de sesión caducó, ya se usó o se empezó en otro navegador. Vuelva a iniciar sesión.
upstream-not-fresh = Esta aplicación le pide volver a iniciar sesión y el proveedor de identidad no confirmó un inicio de sesión reciente.
upstream-cannot-renew = Esta aplicación le pide volver a iniciar sesión y { $upstream } no puede confirmar un inicio de sesión reciente. Elija otra forma de iniciar sesión.
upstream-missing-attributes = El proveedor de identidad no envió lo que este servicio necesita saber de usted.
upstream-failed = El proveedor de identidad no pudo iniciar su sesión. Vuelva a intentarlo.

## Continuando (envío de formulario)
post-title = Continuando
post-heading = Continuando a la aplicación
post-lead = Si no ocurre nada, pulse el botón de abajo.
post-continue = Continuar

## Segundo paso del inicio de sesión
step-title = Verificación en dos pasos
step-enrol-heading = Configurar la verificación en dos pasos
step-enrol-service-asks = { $name } pide un segundo paso al iniciar sesión.
step-enrol-protects = Un segundo paso protege su cuenta.
step-enrol-add = Añada esta cuenta a una aplicación de autenticación y escriba el código que muestre.
step-continue-as = para continuar a { $name } como { $user }
step-signing-in-as = Iniciando sesión como { $user }
step-scan = Escanee este código con una aplicación de autenticación (FreeOTP, Aegis, Google Authenticator, 1Password…).
qr-label = Código QR de la cuenta que se va a añadir
cant-scan = ¿No puede escanearlo? Añada esta dirección a la aplicación:
step-keep-codes = Guarde estos códigos de recuperación en un lugar seguro. Cada uno le permite iniciar sesión una vez si pierde el teléfono. Solo se muestran ahora.
step-enter-code = Escriba el código de 6 cifras que muestra ahora la aplicación.
code-from-app = Código de la aplicación
code-or-recovery = Código de su aplicación de autenticación o un código de recuperación
verify = Verificar
or = o
or-instead-of-app = o, en lugar de una aplicación
use-passkey = Usar una llave de acceso o de seguridad
step-invalid-form = No se pudo entender el formulario de verificación.
step-enter-code-or-passkey = Escriba el código de su aplicación de autenticación o use su llave de acceso.
step-wrong-code = Ese código no es válido o ya se usó. Escriba el código actual de su aplicación de autenticación.
step-throttled = Demasiados códigos erróneos. Espere unos minutos antes de volver a intentarlo.

## Llaves de acceso (static/webauthn.js)
passkey-cancelled = La solicitud de la llave de acceso se canceló o caducó.
passkey-exists = Esta llave de acceso ya está registrada.
passkey-failed = No se pudo usar la llave de acceso

## Sus métodos de inicio de sesión (/mfa)
mfa-title = Sus métodos de inicio de sesión
mfa-signed-in-as = Sesión iniciada como { $user }
mfa-new-codes = Sus nuevos códigos de recuperación
mfa-new-codes-note = Guárdelos en un lugar seguro. Cada uno le permite iniciar sesión una vez si pierde el teléfono. Solo se muestran ahora; los anteriores ya no sirven.
mfa-done = Hecho
mfa-add-app-heading = Añadir una aplicación de autenticación
mfa-scan = Escanee este código con la aplicación y escriba el código que muestre.
mfa-add-app-submit = Añadir la aplicación
mfa-cancel = Cancelar
mfa-second-factors = Segundos factores
mfa-no-factors = Todavía no tiene ningún segundo factor.
mfa-factor-added = añadido el { $date }
mfa-remove = Quitar
mfa-remove-label = Quitar { $label } ({ $kind })
mfa-recovery-left = { $count ->
    [one] Código de recuperación restante: { $count }
   *[other] Códigos de recuperación restantes: { $count }
}
mfa-add-app = Añadir una aplicación de autenticación
mfa-add-passkey = Añadir una llave de acceso o de seguridad
mfa-make-codes = Generar nuevos códigos de recuperación
mfa-kind-totp = aplicación de autenticación
mfa-kind-passkey = llave de acceso
mfa-kind-security-key = llave de seguridad
mfa-app-label = Aplicación de autenticación
mfa-cross-site = Este formulario se envió desde otro sitio.
mfa-form-expired = El formulario había caducado. Vuelva a intentarlo.
mfa-no-such-method = Ese método de inicio de sesión no existe.
mfa-only-factor = Este es su único segundo factor y algunas aplicaciones exigen uno: añada otro antes de quitarlo.
mfa-removed = Se quitó el método de inicio de sesión.
mfa-add-too-slow = Añadir la aplicación tardó demasiado. Vuelva a empezar.
mfa-app-added = Se añadió la aplicación de autenticación.
mfa-wrong-code = Ese código no es válido. Escriba el código que muestra ahora la aplicación.
mfa-passkey-not-added = No se pudo añadir la llave de acceso. Vuelva a intentarlo.
mfa-passkey-added = Se añadió la llave de acceso.
mfa-unknown-action = Acción desconocida.

## Consent
consent-title = ¿Compartir su información?
consent-lead = { $name } recibirá la siguiente información sobre usted ({ $user }).
consent-nothing = Ningún atributo, solo que ha iniciado sesión.
consent-accept = Aceptar
consent-decline = Rechazar
consent-remembered = Su decisión queda guardada; se le volverá a preguntar si la información cambia.
consent-invalid-form = No se pudo interpretar el formulario de consentimiento.
consent-declined-heading = No se ha compartido nada
consent-declined-message = Ha rechazado compartir su información con { $name }. No ha iniciado sesión en esa aplicación.

## The device authorization grant (RFC 8628)
device-title = Conectar un dispositivo
device-heading = Conectar un dispositivo
device-lead = Introduzca el código que muestra su dispositivo.
device-code-label = Código
device-submit = Continuar
device-unknown-code = Este código es desconocido o ha caducado. Compruébelo en su dispositivo o vuelva a empezar allí.
device-throttled = Se han introducido demasiados códigos erróneos desde aquí. Espere unos minutos y vuelva a intentarlo.
device-confirm-heading = ¿Permitir este dispositivo?
device-confirm-lead = { $name } solicita actuar en su nombre ({ $user }) en un dispositivo.
device-confirm-scopes = Acceso solicitado:
device-confirm-hint = Permítalo solo si acaba de iniciar esto en un dispositivo propio.
device-approve = Permitir
device-deny = Denegar
device-approved-heading = Dispositivo conectado
device-approved-message = Puede volver a su dispositivo; continuará por sí solo.
device-denied-heading = Dispositivo no conectado
device-denied-message = El dispositivo fue rechazado. No se ha compartido nada con él.
