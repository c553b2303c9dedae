// Starts Swagger UI on this server's own document; every asset comes from this server.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    persistAuthorization: true,
    // The document is served here; nothing is sent to an outside validator.
    validatorUrl: null,
  });
});
