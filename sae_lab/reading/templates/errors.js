window.addEventListener("error", (e) => {
  const root = document.documentElement;
  root.dataset.errors = (root.dataset.errors ? root.dataset.errors + " | " : "") + e.message;
});
