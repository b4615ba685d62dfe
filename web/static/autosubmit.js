// Submits the response form of a method=POST login; the page works without it.
document.getElementById("post-redirect").submit();
