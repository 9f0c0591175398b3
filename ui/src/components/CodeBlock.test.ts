import { describe, expect, it } from "vitest";
import { highlight, splitFences } from "./CodeBlock";

describe("splitFences", () => {
  it("separates prose from fenced code with its language", () => {
    const parts = splitFences("Here:\n```python\nprint(1)\n```\nDone.");
    expect(parts).toEqual([
      { text: "Here:", code: false },
      { text: "print(1)", code: true, language: "python" },
      { text: "Done.", code: false },
    ]);
  });

  it("keeps plain text whole", () => {
    expect(splitFences("no code")).toEqual([{ text: "no code", code: false }]);
  });
});

describe("highlight", () => {
  it("marks keywords and escapes HTML", () => {
    const html = highlight("def f(): return '<b>'", "python");
    expect(html).toContain('<span class="hljs-keyword">def</span>');
    expect(html).toContain("&lt;b&gt;");
    expect(html).not.toContain("<b>");
  });
});
