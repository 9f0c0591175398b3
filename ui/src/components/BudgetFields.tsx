// The two budget inputs a task form and the settings page share: dollars and
// tokens, kept as the text typed (empty means "none" or "your default").

interface Props {
  cost: string;
  tokens: string;
  onCost: (value: string) => void;
  onTokens: (value: string) => void;
  costLabel: string;
  placeholder: string;
}

export function BudgetFields({ cost, tokens, onCost, onTokens, costLabel, placeholder }: Props) {
  return (
    <>
      <label className="field">
        <span>{costLabel}</span>
        <input
          type="number"
          min={0}
          step="any"
          value={cost}
          onChange={(e) => onCost(e.target.value)}
          placeholder={placeholder}
        />
      </label>
      <label className="field">
        <span>Max tokens</span>
        <input
          type="number"
          min={1}
          step={1}
          value={tokens}
          onChange={(e) => onTokens(e.target.value)}
          placeholder={placeholder}
        />
      </label>
    </>
  );
}

/** A typed number, or null for an empty field. */
export function numberOrNull(text: string): number | null {
  return text.trim() === "" ? null : Number(text);
}
