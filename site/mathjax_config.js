// MathJax 3 settings for the course site, added by Sphinx (mathjax_config_path) after the
// settings myst-parser writes into window.MathJax, before MathJax itself loads.
//
// The widget manager (@jupyter-widgets/html-manager 1.0) typesets widget labels with MathJax
// 2's call, MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); MathJax 3 has no Hub, so
// every widget label would throw. Give it a Hub that does the same with MathJax 3.
window.MathJax = Object.assign(window.MathJax || {}, {
  startup: {
    ready() {
      MathJax.startup.defaultReady();
      MathJax.Hub = {
        Queue(...jobs) {
          for (const job of jobs) {
            if (Array.isArray(job) && job[0] === "Typeset") MathJax.typesetPromise([job[2]]);
          }
        },
      };
    },
  },
});
