() => {
  // Ctrl+Enter (Cmd+Enter on a Mac) presses Generate in the tab on screen.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    const button = [...document.querySelectorAll('button[id$="-generate"]')]
      .find((b) => b.offsetParent !== null && !b.disabled);
    if (button) {
      event.preventDefault();
      button.click();
    }
  });
}
