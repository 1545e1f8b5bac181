-- wrk script: password logins (each opens a new session).
wrk.method = "POST"
wrk.body = '{"email":"bench@example.com","password":"a benchmark password"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-CSRF"] = "1"
